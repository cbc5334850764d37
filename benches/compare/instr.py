#!/usr/bin/env python3
"""instr.py -- user-space instructions per proxied request, counted by valgrind's callgrind.

CPU-time figures on this shared 2-core machine drift by 5-10 % from run to run; instruction counts do
not. Each contender runs under `valgrind --tool=callgrind` in front of the same origins (nginx, as in
proxybench); after a warm-up its counters are zeroed, exactly N requests go through it over C keepalive
connections, and the counters are dumped. Ir / N is its user-space instructions per request (the
kernel's share is not counted: read proxybench's cpu us/req for the whole cost).

  benches/compare/instr.py 'edgegate=target/release/edgegate run -c benches/proxybench.yaml@19091'
  benches/compare/instr.py --requests 20000 --conns 16 --path /x -H 'Authorization: Bearer ...' 'a=...@P' 'b=...@Q'
  benches/compare/instr.py --no-nginx 'edgegate=...@19091'
  benches/compare/instr.py --scenario cache-hit 'edgegate=target/release/edgegate run -c benches/proxybench-cache.yaml@19091'
  benches/compare/instr.py --no-nginx --tls 'edgegate=target/release/edgegate run -c /tmp/proxybench-tls.yaml@19091'

--tls speaks TLS 1.3 to the contenders (keep-alive HTTPS; certificates are not verified): their
listener must be a TLS one, so it goes with --no-nginx. Counted this way, the TLS library's
instructions are in the figure too.

--scenario takes proxybench's scenarios (benches/compare/scenarios): nginx gets the scenario's
configuration (proxy_cache for cache-hit) and the request its path, unless --path is given. The
scenario's headers are not sent: pass them with -H.

Contenders are 'name=<command>@<port>' as in proxybench (same PROXYBENCH_* environment; one worker
thread, keepalive to the origins, no per-request log). nginx (one process, master_process off) is
measured too unless --no-nginx, so every figure comes with a ratio measured the same way.
Needs valgrind and nginx; installs them with apt-get when missing and run as root
(PROXYBENCH_NO_INSTALL=1 skips that). Loopback only; every process started is
stopped by PID.
"""
import argparse
import os
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import proxybench as pb  # noqa: E402  (origin and nginx configs, process handling)

HOST = "127.0.0.1"


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def receive(s):
    """What the socket has now (b"" at its end; None when a TLS record is not complete yet)."""
    try:
        chunk = s.recv(65536)
    except ssl.SSLWantReadError:
        return None
    if isinstance(s, ssl.SSLSocket):
        while chunk and s.pending():
            chunk += s.recv(s.pending())
    return chunk


def drive(port, n, conns, path, headers, timeout_s, tls=None):
    """Send exactly n GETs over `conns` keepalive connections, one in flight per connection.
    Returns (ok, failures)."""
    head = f"GET {path} HTTP/1.1\r\nHost: bench\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    req = head.encode()
    sel = selectors.DefaultSelector()
    state = {}
    sent = ok = bad = 0
    for _ in range(min(conns, n)):
        s = socket.create_connection((HOST, port), timeout=5)
        if tls:
            s = tls.wrap_socket(s, server_hostname="localhost")
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req)
        sent += 1
        state[s] = bytearray()
        sel.register(s, selectors.EVENT_READ)
    deadline = time.time() + timeout_s
    while ok + bad < n:
        if time.time() > deadline:
            raise RuntimeError(f"timed out after {ok + bad} of {n} requests")
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            buf = state[s]
            chunk = receive(s)
            if chunk is None:
                continue
            if not chunk:
                raise RuntimeError("the proxy closed a keepalive connection")
            buf += chunk
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                m = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(buf[:end]))
                if not m:
                    raise RuntimeError("response without Content-Length: " + bytes(buf[:end][:200]).decode(errors="replace"))
                total = end + 4 + int(m.group(1))
                if len(buf) < total:
                    break
                status = int(buf[9:12])
                if 200 <= status < 300:
                    ok += 1
                else:
                    bad += 1
                del buf[:total]
                if sent < n:
                    s.sendall(req)
                    sent += 1
    for s in state:
        s.close()
    return ok, bad


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def measure(name, argv, port, env, args, tmp):
    out = os.path.join(tmp, f"cg.{name}")
    vg = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}.%p",
          "--dump-instr=no", "--compress-strings=no"]
    log = os.path.join(tmp, f"{name}.log")
    p = pb.Proc(name, pb.pinned(args.proxy_cpu, vg + argv), log, env=env).start()
    try:
        pb.wait_port(p, port, args.start_timeout)
        tls = tls_context() if args.tls else None
        drive(port, args.warmup, args.conns, args.path, args.header, args.timeout, tls)
        pid = callgrind_pid(p)
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True, timeout=60)
        ok, bad = drive(port, args.requests, args.conns, args.path, args.header, args.timeout, tls)
        before = set(os.listdir(tmp))
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=120)
        dumps = [f for f in set(os.listdir(tmp)) - before if f.startswith(f"cg.{name}")]
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {name}")
        ir = sum(callgrind_total(os.path.join(tmp, f)) for f in dumps)
        return {"name": name, "ir": ir, "requests": ok + bad, "non_2xx": bad, "ir_per_req": ir / (ok + bad)}
    finally:
        p.stop(grace=1.0)


def callgrind_pid(p):
    """The traced process: the contender itself, or the process its wrapper exec'd (same PID)."""
    r = subprocess.run(["callgrind_control"], capture_output=True, text=True, timeout=30)
    tree = {pid for pid, *_ in pb.proc_tree(p.pid)}
    for line in r.stdout.splitlines():
        m = re.match(r"PID (\d+):", line)
        if m and int(m.group(1)) in tree:
            return int(m.group(1))
    raise RuntimeError("callgrind_control finds no traced process:\n" + r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("contenders", nargs="*", help="name=<command>@<port>")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--path", default=None, help="request path (default: the scenario's, else /)")
    ap.add_argument("--scenario", default=None, help="a proxybench scenario for nginx's configuration")
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--tls", action="store_true", help="HTTPS to the contenders (with --no-nginx)")
    ap.add_argument("--nginx-port", type=int, default=19080)
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--start-timeout", type=float, default=120)
    ap.add_argument("--timeout", type=float, default=900, help="per batch of requests, seconds")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    if args.tls and not args.no_nginx:
        sys.exit("instr.py: --tls goes with --no-nginx (the nginx contender here is a plain HTTP one)")
    missing = [pkg for pkg, tool in (("valgrind", "callgrind_control"), ("nginx", "nginx")) if not pb.which(tool)]
    if missing and os.geteuid() == 0 and os.environ.get("PROXYBENCH_NO_INSTALL") != "1":
        print(f"instr: installing {' '.join(missing)} (apt-get)", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        if subprocess.run(cmd, env=env, stdout=sys.stderr).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr)
            subprocess.run(cmd, env=env, stdout=sys.stderr)
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"instr.py: {tool} not found (apt-get install -y valgrind)")
    nginx = pb.which("nginx")
    if not nginx:
        sys.exit("instr.py: nginx not found (apt-get install -y nginx): it serves the origins")
    tmp = tempfile.mkdtemp(prefix="instr.")
    scenario = pb.load_scenario(args.scenario, tmp) if args.scenario else {}
    args.path = args.path or scenario.get("path") or "/"
    pb.take_charge()
    results = []
    origin = None
    try:
        origin = pb.start_origin(nginx, tmp, "instr.py", [args.nginx_port], lambda argv: pb.pinned(1 - args.proxy_cpu, argv))
        runs = []
        if not args.no_nginx:
            conf = pb.nginx_proxy_conf(tmp, args.nginx_port, scenario).replace("master_process on;", "master_process off;")
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(conf)
            runs.append(("nginx", [nginx, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")], args.nginx_port, None))
        runs += pb.contender_runs(args.contenders, args.path, tmp, "instr.py")
        for name, argv, port, env in runs:
            print(f"instr: {name}: {args.warmup} warm-up + {args.requests} counted requests under callgrind ...",
                  file=sys.stderr, flush=True)
            t0 = time.time()
            r = measure(name, argv, port, env, args, tmp)
            r["seconds"] = round(time.time() - t0, 1)
            results.append(r)
    finally:
        if origin:
            origin.stop(grace=1.0)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    base = next((r for r in results if r["name"] == "nginx"), None)
    print(f"{'contender':<22}{'instr/req':>12}{'vs nginx':>10}{'non-2xx':>9}{'wall s':>8}")
    for r in results:
        ratio = f"{r['ir_per_req'] / base['ir_per_req']:.2f}x" if base else "-"
        print(f"{r['name']:<22}{r['ir_per_req']:>12,.0f}{ratio:>10}{r['non_2xx']:>9}{r['seconds']:>8}")
    print(f"(user-space instructions per request, {args.requests} requests, {args.conns} connections, "
          f"path {args.path}; kernel work is not counted)")


if __name__ == "__main__":
    main()
