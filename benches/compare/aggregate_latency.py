#!/usr/bin/env python3
"""aggregate_latency.py -- what an aggregation route adds to a request's latency.

edgegate runs benches/proxybench-aggregate.yaml (one worker, pinned to CPU 0) in front of the
proxybench nginx origins (CPU 1). Over one keepalive connection, requests alternate between
`/plain` (proxied to one origin) and `/agg` (three parts fanned out to the origins, merged into
one JSON answer); each is timed from the request's first byte to the response's last. The parts
run concurrently and each is as fast as the plain request, so `/agg` minus `/plain` is the time
the fan-out and the merge add over the slowest part. Reported per percentile (p50, p90, p99).

  benches/compare/aggregate_latency.py [--requests 5000] [--binary target/release/edgegate]

Loopback only; every process started is stopped by PID.
"""
import argparse
import http.client
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import proxybench as pb  # noqa: E402  (origins and process handling)

PORT = 19091


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def timed_get(conn, path):
    start = time.perf_counter()
    conn.request("GET", path, headers={"Host": "bench"})
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"{path}: status {response.status}: {body[:200]!r}")
    return elapsed, body


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="timed requests per path")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--binary", default="target/release/edgegate")
    ap.add_argument("--config", default="benches/proxybench-aggregate.yaml")
    args = ap.parse_args()
    nginx = pb.which("nginx")
    if not nginx:
        sys.exit("aggregate_latency.py: nginx not found (apt-get install -y nginx): it serves the origins")
    tmp = tempfile.mkdtemp(prefix="aggregate.")
    pb.take_charge()
    origin = gateway = None
    try:
        origin = pb.start_origin(nginx, tmp, "aggregate_latency.py", [], lambda argv: pb.pinned(1, argv))
        gateway = pb.Proc("edgegate", pb.pinned(0, [args.binary, "run", "-c", args.config]),
                          os.path.join(tmp, "edgegate.log")).start()
        pb.wait_port(gateway, PORT, 30)
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        conn.connect()
        _, body = timed_get(conn, "/agg")
        if b'"failed":[]' not in body:
            raise RuntimeError(f"/agg did not aggregate every part: {body[:300]!r}")
        for _ in range(args.warmup):
            timed_get(conn, "/plain")
            timed_get(conn, "/agg")
        times = {"/plain": [], "/agg": []}
        for _ in range(args.requests):
            for path in ("/plain", "/agg"):
                times[path].append(timed_get(conn, path)[0])
        conn.close()
    finally:
        for proc in (gateway, origin):
            if proc:
                proc.stop(grace=1.0)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = {path: sorted(values) for path, values in times.items()}
    print(f"{'path':<10}{'p50 µs':>10}{'p90 µs':>10}{'p99 µs':>10}")
    for path, values in rows.items():
        print(f"{path:<10}" + "".join(f"{percentile(values, q) * 1e6:>10.0f}" for q in (0.5, 0.9, 0.99)))
    added = [percentile(rows["/agg"], q) - percentile(rows["/plain"], q) for q in (0.5, 0.9, 0.99)]
    print(f"{'added':<10}" + "".join(f"{a * 1e6:>10.0f}" for a in added))


if __name__ == "__main__":
    main()
