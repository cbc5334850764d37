#!/usr/bin/env python3
"""fleet_limits.py -- shared rate limits on Redis: what they cost and how far a fleet overshoots.

Part 1, cost: one edgegate (one worker, pinned to CPU 0) in front of the proxybench nginx origins
(CPU 1), one policy that never limits (key global, 1e9 a minute), and wrk (CPU 1) over 16 keepalive
connections; for each store, in interleaved rounds: the local store, the Redis store with one
round trip per decision, and the Redis store local-first (`sync: { interval: 50ms }`). Reports the
gateway's CPU µs per request, Redis's CPU µs per request, requests per second and wrk's p99.

Part 2, over-admission: N edgegates (N = 2, 4) share one `fixed_window` policy of 1000 a minute
(key global) local-first with a sync interval of 10, 50 or 200 ms, each under its own wrk
(1 thread, 4 connections, 3 s: far more requests than the limit, spread evenly over the fleet,
as a round-robin balancer would). Admitted = answers that were not 429; the table gives it against
the limit. A run waits to start clear of a minute boundary; Redis is flushed between runs.

  benches/compare/fleet_limits.py [--binary target/release/edgegate] [--rounds 3] [--duration 5]

Needs nginx, wrk, redis-server (scripts/install-deps.sh bench). Loopback only; every process
started is stopped by PID.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import proxybench as pb  # noqa: E402  (origins, processes, wrk parsing)

REDIS_PORT = 19379
BASE_PORT = 19110


def gateway_config(index, port, store, sync, limit, algorithm="sliding_window"):
    redis = ""
    if store == "redis":
        redis = (f"  store: redis\n  redis: {{ url: \"redis://127.0.0.1:{REDIS_PORT}/0\", "
                 "timeout: 200ms, on_error: allow }\n")
    sync_text = f", sync: {{ interval: {sync} }}" if sync else ""
    return f"""server:
  threads: 1
  pid_file: /tmp/edgegate-fleet-{index}.pid
  upgrade_sock: /tmp/edgegate-fleet-{index}.sock
listeners:
  - {{ name: http, address: 127.0.0.1:{port} }}
admin: {{ address: 127.0.0.1:{port + 1000} }}
access_log: {{ format: off }}
rate_limits:
{redis}  policies:
    fleet: {{ algorithm: {algorithm}, key: global, limit: {limit}, window: 1m{sync_text} }}
upstreams:
  origins:
    selection: round_robin
    targets:
      - {{ address: 127.0.0.1:19001 }}
      - {{ address: 127.0.0.1:19002 }}
routes:
  - {{ name: all, upstream: origins, rate_limits: [fleet] }}
"""


def start_gateway(binary, tmp, index, port, text, wrap=lambda argv: argv):
    path = os.path.join(tmp, f"edgegate-{index}.yaml")
    with open(path, "w") as f:
        f.write(text)
    proc = pb.Proc(f"edgegate-{index}", wrap([binary, "run", "-c", path]),
                   os.path.join(tmp, f"edgegate-{index}.log")).start()
    pb.wait_port(proc, port, 30)
    return proc


def start_redis(tmp):
    redis = pb.Proc("redis", pb.pinned(1, ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no", "--dir", tmp]),
                    os.path.join(tmp, "redis.log")).start()
    pb.wait_port(redis, REDIS_PORT, 20)
    return redis


def redis_flush():
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=5) as s:
        s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        s.recv(64)


def proc_ticks(proc):
    return sum(ticks for _, _, ticks, _ in pb.proc_tree(proc.pid))


def wrk(port, threads, connections, duration, cpu=None):
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    if cpu is not None:
        argv = pb.pinned(cpu, argv)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wrk_result(p, duration):
    out, _ = p.communicate(timeout=duration + 30)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed: {out[-300:]}")
    return pb.parse_wrk(out)


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def cost(args, nginx, tmp):
    modes = [("local", "local", None), ("redis, per request", "redis", None),
             ("redis, local-first 50ms", "redis", "50ms")]
    rows = {name: [] for name, _, _ in modes}
    hz = os.sysconf("SC_CLK_TCK")
    for _ in range(args.rounds):
        for name, store, sync in modes:
            redis_flush()
            port = BASE_PORT
            gw = start_gateway(args.binary, tmp, 0, port, gateway_config(0, port, store, sync, 1_000_000_000),
                               lambda argv: pb.pinned(0, argv))
            try:
                warm = wrk(port, 1, 16, 1, cpu=1)
                wrk_result(warm, 1)
                before = (proc_ticks(gw), proc_ticks(REDIS))
                p = wrk(port, 1, 16, args.duration, cpu=1)
                result = wrk_result(p, args.duration)
                after = (proc_ticks(gw), proc_ticks(REDIS))
            finally:
                gw.stop(grace=1.0)
            requests = result["requests"]
            if result["non2xx"] or result["socket_errors"]:
                raise RuntimeError(f"{name}: {result}")
            rows[name].append({
                "gw_us": (after[0] - before[0]) / hz / requests * 1e6,
                "redis_us": (after[1] - before[1]) / hz / requests * 1e6,
                "rps": result["rps"],
                "p99_ms": result.get("p99_ms"),
            })
    base = median([r["gw_us"] for r in rows["local"]])
    print(f"cost: one worker, wrk -t1 -c16 -d{args.duration}s, medians of {args.rounds} interleaved rounds")
    print(f"{'store':<26}{'gw µs/req':>10}{'÷local':>8}{'redis µs/req':>13}{'req/s':>9}{'p99 ms':>8}")
    for name, _, _ in modes:
        r = rows[name]
        gw_us = median([x["gw_us"] for x in r])
        print(f"{name:<26}{gw_us:>10.1f}{gw_us / base:>8.2f}{median([x['redis_us'] for x in r]):>13.1f}"
              f"{median([x['rps'] for x in r]):>9.0f}{median([x['p99_ms'] for x in r]):>8.2f}")


def clear_of_minute_boundary(needed):
    while time.time() % 60 > 60 - needed:
        time.sleep(0.5)


def overshoot(args, tmp):
    print(f"\nover-admission: fixed_window 1000/min, key global; each instance under wrk -t1 -c4 -d{args.burst}s")
    print(f"{'sync':<10}{'instances':>10}{'admitted':>10}{'vs limit':>10}{'refused':>10}")
    for sync in ("10ms", "50ms", "200ms", None):
        for count in (2, 4):
            redis_flush()
            gateways = []
            try:
                for i in range(count):
                    port = BASE_PORT + 10 * (i + 1)
                    text = gateway_config(i + 1, port, "redis", sync, 1000, "fixed_window")
                    gateways.append((port, start_gateway(args.binary, tmp, i + 1, port, text)))
                time.sleep(0.5)   # a few heartbeats: every instance counts the others
                clear_of_minute_boundary(args.burst + 5)
                loads = [wrk(port, 1, 4, args.burst) for port, _ in gateways]
                results = [wrk_result(p, args.burst) for p in loads]
            finally:
                for _, gw in gateways:
                    gw.stop(grace=1.0)
            admitted = sum(r["requests"] - r["non2xx"] for r in results)
            refused = sum(r["non2xx"] for r in results)
            label = sync or "per request"
            print(f"{label:<10}{count:>10}{admitted:>10}{(admitted - 1000) / 10:>+9.1f}%{refused:>10}")


REDIS = None


def main():
    global REDIS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/edgegate")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of load per cost run")
    ap.add_argument("--burst", type=int, default=3, help="seconds of load per over-admission run")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    nginx = pb.which("nginx")
    for tool in ("wrk", "redis-server", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"fleet_limits.py: {tool} not found (scripts/install-deps.sh bench)")
    if not nginx:
        sys.exit("fleet_limits.py: nginx not found (scripts/install-deps.sh bench): it serves the origins")
    tmp = tempfile.mkdtemp(prefix="fleet-limits.")
    pb.take_charge()
    origin = None
    try:
        origin = pb.start_origin(nginx, tmp, "fleet_limits.py", [], lambda argv: pb.pinned(1, argv))
        REDIS = start_redis(tmp)
        if not args.skip_cost:
            cost(args, nginx, tmp)
        overshoot(args, tmp)
    finally:
        for proc in (REDIS, origin):
            if proc:
                proc.stop(grace=1.0)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
