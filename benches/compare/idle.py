#!/usr/bin/env python3
"""idle.py -- memory per idle keep-alive client connection, side by side.

An edge proxy holds many idle keep-alive clients. For each contender this opens N client connections one
after another, sends one request on each (so every connection has been used once), leaves them all open
and idle, waits, and reads the resident memory of the contender's whole process tree. (RSS after - RSS
before) / N is the cost of one idle connection. A second request on every connection checks that none was
dropped. nginx (one worker) is measured too unless --no-nginx.

  benches/compare/idle.py 'edgegate=target/release/edgegate run -c benches/proxybench.yaml@19091'
  benches/compare/idle.py --conns 8000 'vanilla=<path to vanilla-pingora>@19090' 'edgegate=...@19091'

Contenders are 'name=<command>@<port>' with the same PROXYBENCH_* environment as proxybench and instr.py.
The open-files limit bounds N (about half the hard limit: each connection uses a descriptor on both
sides). Needs nginx for the origins (installed with apt-get when missing and run as root). Loopback only;
every process started is stopped by PID.
"""
import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import proxybench as pb  # noqa: E402  (origin and nginx configs, process handling)

HOST = "127.0.0.1"


def tree_rss_kib(pid):
    total = 0
    for member, _, _, _ in pb.proc_tree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                for line in f:
                    if line.startswith("VmRSS"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def request(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = sock.recv(65536)
    return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")


def measure(name, argv, port, env, args, tmp):
    proc = pb.Proc(name, argv, os.path.join(tmp, f"{name}.log"), env=env).start()
    socks = []
    try:
        pb.wait_port(proc, port, args.start_timeout)
        for _ in range(20):  # warm the contender's pools before the baseline
            s = socket.create_connection((HOST, port), timeout=5)
            request(s, args.path)
            s.close()
        time.sleep(1.0)
        before = tree_rss_kib(proc.pid)
        served = 0
        for _ in range(args.conns):
            s = socket.create_connection((HOST, port), timeout=5)
            s.settimeout(10)
            socks.append(s)
            try:
                served += request(s, args.path)
            except OSError:
                pass
        time.sleep(args.settle)
        after = tree_rss_kib(proc.pid)
        again = 0
        for s in socks:
            try:
                again += request(s, args.path)
            except OSError:
                pass
        return {"name": name, "before_kib": before, "after_kib": after, "served": served, "again": again,
                "kib_per_conn": (after - before) / max(1, args.conns)}
    finally:
        for s in socks:
            s.close()
        proc.stop(grace=2.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("contenders", nargs="*")
    ap.add_argument("--conns", type=int, default=4000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading RSS")
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--nginx-port", type=int, default=19080)
    ap.add_argument("--start-timeout", type=float, default=60)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.conns > hard // 2 - 200:
        args.conns = hard // 2 - 200
        print(f"idle: open-files limit {hard}: measuring {args.conns} connections", file=sys.stderr)
    if not pb.which("nginx") and os.geteuid() == 0 and os.environ.get("PROXYBENCH_NO_INSTALL") != "1":
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "nginx"], env=env, stdout=sys.stderr).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr)
            subprocess.run(["apt-get", "install", "-y", "nginx"], env=env, stdout=sys.stderr)
    nginx = pb.which("nginx")
    if not nginx:
        sys.exit("idle.py: nginx not found (apt-get install -y nginx): it serves the origins")
    tmp = tempfile.mkdtemp(prefix="idle.")
    pb.take_charge()
    results, origin = [], None
    try:
        origin = pb.start_origin(nginx, tmp, "idle.py", [args.nginx_port])
        runs = []
        if not args.no_nginx:
            conf = pb.nginx_proxy_conf(tmp, args.nginx_port, {}).replace("master_process on;", "master_process off;")
            conf = re.sub(r"worker_connections\s+\d+;", f"worker_connections {args.conns + 1000};", conf)
            conf = re.sub(r"keepalive_timeout\s+[^;]+;", "keepalive_timeout 300s;", conf)
            if "keepalive_timeout" not in conf:
                conf = conf.replace("http {", "http {\n    keepalive_timeout 300s;", 1)
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(conf)
            runs.append(("nginx", [nginx, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")], args.nginx_port, None))
        runs += pb.contender_runs(args.contenders, args.path, tmp, "idle.py")
        for name, argv, port, env in runs:
            print(f"idle: {name}: {args.conns} idle keep-alive connections ...", file=sys.stderr, flush=True)
            results.append(measure(name, argv, port, env, args, tmp))
    finally:
        if origin:
            origin.stop(grace=1.0)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'contender':<22}{'RSS before':>12}{'RSS idle':>12}{'KiB/conn':>10}{'served':>9}{'again':>8}")
    for r in results:
        print(f"{r['name']:<22}{r['before_kib'] / 1024:>10.1f}Mi{r['after_kib'] / 1024:>10.1f}Mi"
              f"{r['kib_per_conn']:>10.1f}{r['served']:>9}{r['again']:>8}")
    print(f"({args.conns} connections, one request each, then idle {args.settle} s; RSS of the whole process tree)")


if __name__ == "__main__":
    main()
