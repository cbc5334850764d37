#!/usr/bin/env python3
"""compression.py -- response compression throughput: edgegate beside nginx's gzip, same run.

A 100 KiB JSON document (deterministic) is served by an nginx origin; each contender proxies it,
compressing for the client's Accept-Encoding, pinned to CPU 0 with one worker, while wrk (and the
origin) run on CPU 1. For each contender the table gives the proxy's CPU time per response and
the throughput that makes per core of the proxy: uncompressed MB compressed per CPU-second
(proxying included), with the compressed size.

  benches/compare/compression.py [--binary target/release/edgegate] [--duration 8] [--rounds 2]

Needs nginx, wrk and curl (scripts/install-deps.sh bench). Loopback only; every process started
is ended by its PID.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ORIGIN_PORT = 19041
PROXY_PORT = 19042
ADMIN_PORT = 19943
CLK_TCK = os.sysconf("SC_CLK_TCK")


def document():
    """About 100 KiB of JSON records: API-like, repetitive keys, varying values."""
    records = []
    i = 0
    while len(json.dumps(records)) < 100 * 1024:
        records.append({
            "id": i,
            "sku": f"SKU-{(i * 7919) % 100000:05d}",
            "name": f"Product {i} of the catalogue",
            "price": round(3.5 + (i * 37 % 1000) / 10, 2),
            "in_stock": i % 3 != 0,
            "tags": ["red", "large"] if i % 2 else ["blue", "small", "sale"],
        })
        i += 1
    return json.dumps(records).encode()


def start(cmd, cpu, log):
    return subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdout=log, stderr=log)


def wait_port(port, path="/", timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def nginx_conf(tmp, role, level=None):
    common = (
        "daemon off; master_process off; worker_processes 1; error_log stderr crit;\n"
        f"pid {tmp}/{role}.pid;\n"
        "events { worker_connections 1024; }\n"
    )
    temp = "".join(
        f"  {kind}_temp_path {tmp}/{role}.{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    if role == "origin":
        server = (
            f"  server {{ listen 127.0.0.1:{ORIGIN_PORT}; root {tmp};\n"
            "    location / { default_type application/json; } }\n"
        )
    else:
        server = (
            f"  upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 16; }}\n"
            f"  gzip on; gzip_comp_level {level}; gzip_types application/json;\n"
            "  gzip_proxied any; gzip_min_length 1024; gzip_vary on;\n"
            f"  server {{ listen 127.0.0.1:{PROXY_PORT};\n"
            "    location / { proxy_pass http://origin; proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\"; proxy_set_header Accept-Encoding \"\"; } }\n"
        )
    path = f"{tmp}/{role}.conf"
    with open(path, "w") as f:
        f.write(common + "http {\n  access_log off;\n" + temp + server + "}\n")
    return path


def edgegate_conf(tmp, name, coding, level):
    path = f"{tmp}/{name}.yaml"
    with open(path, "w") as f:
        f.write(
            "server: { threads: 1, pid_file: %s/%s.pid, upgrade_sock: %s/%s.sock }\n"
            "listeners: [{ name: http, address: 127.0.0.1:%d }]\n"
            "admin: { address: 127.0.0.1:%d }\n"
            "access_log: { format: off }\n"
            "upstreams: { origin: { targets: [{ address: 127.0.0.1:%d }] } }\n"
            "routes: [{ name: all, upstream: origin, compression: { algorithms: [%s], level: { %s: %d } } }]\n"
            % (tmp, name, tmp, name, PROXY_PORT, ADMIN_PORT, ORIGIN_PORT, coding, coding, level)
        )
    return path


def compressed_size(coding):
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %header{content-encoding}",
         "-H", f"Accept-Encoding: {coding}", f"http://127.0.0.1:{PROXY_PORT}/doc.json"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    if len(out) < 2 or out[1] != coding:
        raise SystemExit(f"the proxy did not answer in {coding}: {out}")
    return int(out[0])


def measure(proc, coding, duration):
    before = cpu_seconds(proc.pid)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c4", f"-d{duration}s",
         "-H", f"Accept-Encoding: {coding}", f"http://127.0.0.1:{PROXY_PORT}/doc.json"],
        capture_output=True, text=True, check=True,
    ).stdout
    cpu = cpu_seconds(proc.pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"non-2xx answers: {out}")
    return requests, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/edgegate")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "curl", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is needed (scripts/install-deps.sh bench)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = tempfile.mkdtemp(prefix="compression.")
    os.chmod(tmp, 0o755)
    body = document()
    with open(f"{tmp}/doc.json", "wb") as f:
        f.write(body)
    log = open(f"{tmp}/log", "w")
    origin = start([nginx, "-c", nginx_conf(tmp, "origin")], 1, log)
    contenders = [
        ("nginx gzip 1", "gzip", lambda: [nginx, "-c", nginx_conf(tmp, "nginx-gzip-1", 1)]),
        ("edgegate gzip 1", "gzip", lambda: [args.binary, "run", "-c", edgegate_conf(tmp, "eg-gzip-1", "gzip", 1)]),
        ("nginx gzip 6", "gzip", lambda: [nginx, "-c", nginx_conf(tmp, "nginx-gzip-6", 6)]),
        ("edgegate gzip 6", "gzip", lambda: [args.binary, "run", "-c", edgegate_conf(tmp, "eg-gzip-6", "gzip", 6)]),
        ("edgegate br 4", "br", lambda: [args.binary, "run", "-c", edgegate_conf(tmp, "eg-br-4", "br", 4)]),
        ("edgegate zstd 3", "zstd", lambda: [args.binary, "run", "-c", edgegate_conf(tmp, "eg-zstd-3", "zstd", 3)]),
    ]
    results = {name: [] for name, _, _ in contenders}
    sizes = {}
    try:
        wait_port(ORIGIN_PORT, "/doc.json")
        for _ in range(args.rounds):
            for name, coding, command in contenders:
                proc = start(command(), 0, log)
                try:
                    wait_port(PROXY_PORT, "/doc.json")
                    sizes[name] = compressed_size(coding)
                    subprocess.run(["wrk", "-t1", "-c4", "-d1s", "-H", f"Accept-Encoding: {coding}",
                                    f"http://127.0.0.1:{PROXY_PORT}/doc.json"], capture_output=True)
                    results[name].append(measure(proc, coding, args.duration))
                finally:
                    proc.terminate()
                    proc.wait(timeout=15)
    finally:
        origin.terminate()
        origin.wait(timeout=15)
        log.close()
    print(f"{len(body) / 1024:.0f} KiB JSON; {args.rounds} round(s) of {args.duration}s; "
          "proxy on CPU 0 (one worker), wrk and the nginx origin on CPU 1")
    print(f"{'contender':18} {'size':>8} {'ratio':>6} {'µs CPU/resp':>12} {'MB/s per core':>14} {'vs nginx gzip':>14}")
    per_core = {}
    for name, coding, _ in contenders:
        requests = sum(r for r, _ in results[name])
        cpu = sum(c for _, c in results[name])
        per_core[name] = requests * len(body) / cpu / 1e6
        micros = cpu / requests * 1e6
        level = name.split()[-1]
        reference = per_core.get(f"nginx gzip {level}") if coding == "gzip" else None
        versus = f"{per_core[name] / reference:.2f}x" if reference else "-"
        print(f"{name:18} {sizes[name]:>8} {len(body) / sizes[name]:>6.1f} {micros:>12.0f} "
              f"{per_core[name]:>14.0f} {versus:>14}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
