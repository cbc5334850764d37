#!/usr/bin/env python3
"""Idle TLS clients for benches/wrk/idle-tls.sh: opens --conns TLS connections to 127.0.0.1:--port,
sends one GET / on each, waits --settle seconds, and prints the server's (--pid) RSS growth per
connection; then sends a second request on every connection and counts the answers."""

import argparse
import asyncio
import ssl
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def exchange(reader, writer):
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def main(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # Warm-up: the first connections grow pools and caches that are not per connection.
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port, ssl=context)
        await exchange(reader, writer)
        writer.close()
    await asyncio.sleep(1)
    before = rss_kib(args.pid)
    limit = asyncio.Semaphore(100)

    async def open_one():
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port, ssl=context)
            await exchange(reader, writer)
            return reader, writer

    started = time.time()
    connections = await asyncio.gather(*(open_one() for _ in range(args.conns)))
    opened = time.time() - started
    await asyncio.sleep(args.settle)
    after = rss_kib(args.pid)
    answers = await asyncio.gather(*(exchange(r, w) for r, w in connections), return_exceptions=True)
    alive = sum(1 for a in answers if a is True)
    per_connection = (after - before) / args.conns
    print(
        f"{args.name:<10} idle TLS connections {args.conns}, opened in {opened:.1f}s; "
        f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB: {per_connection:.1f} KiB per connection; "
        f"{alive}/{args.conns} answered a second request",
        flush=True,
    )
    for _, writer in connections:
        writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--name", default="server")
    asyncio.run(main(parser.parse_args()))
