#!/usr/bin/env python3
"""proxybench.py -- side-by-side HTTP reverse-proxy benchmark (the engine behind proxybench.sh).

Python 3 standard library only. Run it through proxybench.sh, which installs wrk/nginx/haproxy.

WHAT IT DOES
  * starts one nginx "origin" (its own master, -p/-c in a temp dir) listening on
    127.0.0.1:19001 and 127.0.0.1:19002, answering a fixed ~100-byte JSON body, keepalive on;
  * starts every contender: nginx (worker_processes 1, upstream keepalive 64), haproxy
    (nbthread 1, http-reuse always) and any extra `name=<foreground command>@<port>`;
    each forwards round-robin to both origins with upstream keepalive;
  * checks each contender answers 200 through the proxy, then runs interleaved rounds
    (A B C, A B C, ...) of `wrk -t1 -c64 -d10s --latency`, after a 3 s warm-up per contender;
  * prints a table (median req/s, p50, p99, peak RSS, ratios vs nginx and vs direct) and
    writes the same as JSON (--out).

CPU PLACEMENT (the fairness model on a 2-core box)
  * proxy under test -> CPU 0 only (`taskset -c 0`, inherited by every thread and child, so
    even a multi-threaded proxy gets exactly one core). nginx/haproxy are also configured
    for one worker / one thread; configure extra contenders the same way (e.g. Pingora
    `threads: 1`) -- the harness reports their process/thread counts so you can check.
  * wrk (1 thread) + origin nginx (1 worker) -> CPU 1. This side does the same work per
    request for every contender; `direct` (wrk -> origin, no proxy) measures its ceiling.
    A proxied run can never beat `direct`.
  * Consequence: req/s ratios are only meaningful while the proxy is the bottleneck (CPU 0
    ~100%). With a proxy in the middle the load side loses its batching and itself saturates
    near ~100-110k req/s on the reference box (measure it with the optional `haproxy-tcp`
    contender, an L4 passthrough), so req/s cannot show a proxy more than ~1.1x nginx there.
    `cpu us/req` (proxy CPU time per request) and `cpu-eff` (its ratio) keep discriminating
    beyond that and are the least noise-sensitive figures.
  * Loopback networking: part of the kernel's TCP work is done in the sender's context, so
    some proxy-related kernel time lands on CPU 1 and vice versa. Identical for all proxies.

CPU ACCOUNTING: busy% per CPU = 1 - idle/wall (/proc/stat idle, precise on NO_HZ kernels);
process CPU from /proc/<pid>/stat; bg% = CPU of every other user process during the round
(not ours, not kernel threads) -- a direct measure of interference from e.g. a cargo build.

Everything it starts is tracked by PID (+ start time) and killed by PID on exit, error,
Ctrl-C or SIGTERM. No pkill/killall. Only 127.0.0.1 is ever contacted.
"""
import argparse
import base64
import ctypes
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO_DIR = os.path.join(HERE, "scenarios")
HOST = "127.0.0.1"          # the only address this harness ever talks to
ORIGIN_PORTS = (19001, 19002)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SHELLS = {"sh", "dash", "bash", "taskset"}   # wrappers excluded from RSS sums
MAX_ROUNDS, MAX_DURATION, MAX_WARMUP = 50, 300, 60

STARTED = []                # every Proc we started, for cleanup
PIDS_FILE = None            # <tmp>/pids: "pid name" of everything started (for post-mortems)

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def take_charge():
    """What every harness does first: adopt orphaned grandchildren (`become_subreaper`) and
    turn SIGINT/SIGTERM/SIGHUP into an exit, so its `finally` stops what it started."""
    become_subreaper()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))


def become_subreaper():
    """Orphaned grandchildren (e.g. a proxy behind `sh -c 'cd x && proxy'`) are re-parented
    to us instead of PID 1, so we can reap them by PID and leave no zombies."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _child_setup():
    # in the child, before exec: die with SIGKILL if the harness itself dies (even kill -9)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def log(msg):
    print(f"[proxybench] {msg}", file=sys.stderr, flush=True)


def which(name):
    p = shutil.which(name)
    if p:
        return p
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


# ---------------------------------------------------------------- /proc helpers
def proc_stat(pid):
    """(ppid, starttime, cpu_ticks, comm, state) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    lp, rp = s.find("("), s.rfind(")")
    comm = s[lp + 1:rp]
    f = s[rp + 2:].split()          # f[n-3] is field n of proc(5)
    return int(f[1]), int(f[19]), int(f[11]) + int(f[12]), comm, f[0]


def proc_tree(root):
    """[(pid, starttime, cpu_ticks, comm)] for root and all its live descendants."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[4] != "Z":
                table[int(d)] = st
    if root not in table:
        return []
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[0], []).append(pid)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        st = table[p]
        out.append((p, st[1], st[2], st[3]))
        stack.extend(kids.get(p, []))
    return out


def proc_status(pid):
    d = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        pass
    return d


def cpu_times():
    """(monotonic seconds, {cpu: (idle_ticks, steal_ticks)}) from /proc/stat.
    Busy% is derived as 1 - idle/wall: idle is measured precisely on NO_HZ kernels, whereas
    the user/system columns are tick samples that undercount short bursts (checked here)."""
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = [int(x) for x in parts[1:]] + [0] * 10
                res[int(parts[0][3:])] = (v[3] + v[4], v[7])
    return time.monotonic(), res


def cpu_delta(a, b):
    """{cpu: {'busy': %, 'steal': %}} between two cpu_times()."""
    wall = max(1e-3, b[0] - a[0]) * CLK_TCK
    return {c: {"busy": max(0.0, min(100.0, 100.0 * (1 - (b[1][c][0] - a[1][c][0]) / wall))),
                "steal": 100.0 * (b[1][c][1] - a[1][c][1]) / wall} for c in b[1]}


def user_proc_ticks():
    """{(pid, starttime): utime+stime ticks} for every non-kernel-thread process.
    Per-process times are derived from the scheduler's precise runtime."""
    d = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fl = s[s.rfind(")") + 2:].split()
        if int(fl[6]) & 0x00200000:          # PF_KTHREAD
            continue
        d[(int(name), int(fl[19]))] = int(fl[11]) + int(fl[12])
    return d


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- processes
class Proc:
    """A server we started. Tracked by PID + start time; stopped by PID only."""

    def __init__(self, name, argv, logpath, env=None):
        self.name, self.argv, self.logpath, self.env = name, argv, logpath, env
        self.p = None
        self.logf = None
        self.hwm_kb = {}           # (pid, starttime) -> max VmHWM seen (kB)
        self.max_procs = 0
        self.max_threads = 0
        self.cpus_allowed = set()

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env=self.env, preexec_fn=_child_setup)
        STARTED.append(self)
        self.recorded = set()
        self.record()
        return self

    def record(self):
        """Append new members of our process tree to the pids file ("pid starttime name"),
        which the watchdog uses if the harness itself is SIGKILLed."""
        if not PIDS_FILE or not self.alive():
            return
        new = [(pid, st, comm) for pid, st, _, comm in proc_tree(self.pid)
               if (pid, st) not in self.recorded]
        if new:
            with open(PIDS_FILE, "a") as f:
                for pid, st, comm in new:
                    self.recorded.add((pid, st))
                    f.write(f"{pid} {st} {self.name}/{comm}\n")

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def cpu_ticks(self):
        """{(pid, start): ticks} over the tree."""
        return {(pid, st): t for pid, st, t, _ in proc_tree(self.pid)} if self.alive() else {}

    def sample(self):
        """Update RSS high-water marks, process/thread counts, CPU affinity."""
        if not self.alive():
            return
        procs = threads = 0
        for pid, st, _, comm in proc_tree(self.pid):
            s = proc_status(pid)
            if not s:
                continue
            if s.get("Cpus_allowed_list"):
                self.cpus_allowed.add(s["Cpus_allowed_list"])
            if comm in SHELLS:
                continue
            procs += 1
            threads += int(s.get("Threads", "1") or 1)
            hwm = int((s.get("VmHWM") or "0 kB").split()[0])
            self.hwm_kb[(pid, st)] = max(self.hwm_kb.get((pid, st), 0), hwm)
        self.max_procs = max(self.max_procs, procs)
        self.max_threads = max(self.max_threads, threads)
        self.record()

    def peak_rss_mib(self):
        return sum(self.hwm_kb.values()) / 1024.0

    def log_tail(self, n=15):
        try:
            with open(self.logpath, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace=3.0):
        if self.p is None:
            return
        members = [(pid, st) for pid, st, _, _ in proc_tree(self.pid)] if self.alive() else []

        def same(pid, st):
            s = proc_stat(pid)
            return s is not None and s[1] == st and s[4] != "Z"

        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        rest = [(pid, st) for pid, st in members if pid != self.pid and same(pid, st)]
        for pid, st in rest:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 2.0
        while rest and time.time() < deadline:
            rest = [(p, s) for p, s in rest if same(p, s)]
            time.sleep(0.05)
        for pid, st in rest:
            if same(pid, st):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log(f"WARNING: {self.name} pid {self.pid} did not exit after SIGKILL")
        # reap descendants that were re-parented to us (we are a child subreaper)
        for pid, _ in members:
            if pid == self.pid:
                continue
            for _ in range(40):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:      # not our child (reaped by its parent)
                    break
                time.sleep(0.05)
        if self.logf:
            self.logf.close()
            self.logf = None


def cleanup():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)     # finish cleaning up even on a 2nd Ctrl-C
    for p in reversed(STARTED):
        try:
            p.stop()
        except Exception as e:                  # keep going; try the others
            log(f"cleanup of {p.name} (pid {p.pid}) failed: {e}")
    STARTED.clear()


def watchdog(harness_pid, pids_file, max_life_s):
    """Separate process: if the harness dies without cleaning up (kill -9, OOM), kill every
    PID it recorded (verifying start time, so a recycled PID is never hit), then exit.
    The harness stops the watchdog itself (by PID) after a normal cleanup."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    deadline = time.time() + max_life_s
    while os.getppid() == harness_pid and time.time() < deadline:
        time.sleep(0.5)
    try:
        with open(pids_file) as f:
            entries = [line.split()[:2] for line in f if line.strip()]
    except OSError:
        return 0
    targets = [(int(p), int(st)) for p, st in entries]

    def same(pid, st):
        s = proc_stat(pid)
        return s is not None and s[1] == st and s[4] != "Z"
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
        for pid, st in targets:
            if same(pid, st):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        end = time.time() + wait
        while time.time() < end and any(same(p, s) for p, s in targets):
            time.sleep(0.1)
    return 0


def start_watchdog(pids_file, max_life_s):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_watchdog",
                             str(os.getpid()), pids_file, str(int(max_life_s))],
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")



def start_origin(nginx, tmp, tool, extra_ports=(), wrap=lambda argv: argv):
    """Starts the nginx origins (ports ORIGIN_PORTS) after checking no port of ours is taken."""
    for port in list(ORIGIN_PORTS) + list(extra_ports):
        if port_open(port):
            sys.exit(f"{tool}: port {port} already answers; stop whatever listens there")
    with open(os.path.join(tmp, "origin.conf"), "w") as f:
        f.write(origin_conf(tmp))
    origin = Proc("origin", wrap([nginx, "-p", tmp, "-c", os.path.join(tmp, "origin.conf")]),
                  os.path.join(tmp, "origin.log")).start()
    for port in ORIGIN_PORTS:
        wait_port(origin, port, 20)
    return origin


def contender_runs(specs, path, tmp, tool):
    """(name, argv, port, env) of every `name=<command>@<port>` contender."""
    import shlex
    runs = []
    for spec in specs:
        m = re.match(r"^([A-Za-z0-9_.-]+)=(.+)@(\d+)$", spec)
        if not m:
            sys.exit(f"{tool}: contender must be name=<command>@<port>: {spec}")
        name, cmd, port = m.group(1), m.group(2), int(m.group(3))
        env = dict(os.environ, PROXYBENCH_PORT=str(port), PROXYBENCH_LISTEN=f"{HOST}:{port}",
                   PROXYBENCH_ORIGINS=",".join(f"{HOST}:{p}" for p in ORIGIN_PORTS),
                   PROXYBENCH_SCENARIO="baseline", PROXYBENCH_PATH=path, PROXYBENCH_TMP=tmp)
        runs.append((name, shlex.split(cmd), port, env))
    return runs

def port_open(port, timeout=0.2):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(proc, port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (rc={proc.p.returncode}) before "
                               f"listening on {port}:\n{proc.log_tail()}")
        if port_open(port):
            time.sleep(0.2)           # let a master fork its workers, then record the tree
            proc.record()
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {HOST}:{port} within {timeout}s:\n"
                       f"{proc.log_tail()}")


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu)] + argv


# ---------------------------------------------------------------- configs
BODY = '{"ok":true,"origin":%d,"service":"proxybench-origin","payload":"abcdefghijklmnopqrstuvwxyz0123456789"}'


def _lines(x):
    if not x:
        return ""
    return "\n".join(x) if isinstance(x, list) else str(x)


def nofile_limit():
    """FD limit nginx may set (cannot exceed our hard limit, e.g. in containers)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)


def nginx_main(tmp, name):
    return f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile_limit()};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 16384; }}
"""


def nginx_http_common(tmp, name):
    return f"""    access_log off;
    server_tokens off;
    client_body_temp_path {tmp}/{name}.client_body;
    proxy_temp_path {tmp}/{name}.proxy_temp;
    fastcgi_temp_path {tmp}/{name}.fastcgi_temp;
    uwsgi_temp_path {tmp}/{name}.uwsgi_temp;
    scgi_temp_path {tmp}/{name}.scgi_temp;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
"""


def origin_conf(tmp):
    servers = []
    for i, port in enumerate(ORIGIN_PORTS, 1):
        body = BODY % i
        servers.append(f"""    server {{
        listen {HOST}:{port} backlog=4096;
        # "/" and anything else: fixed JSON, not cacheable
        location / {{ add_header X-Origin {i}; return 200 '{body}'; }}
        # "/cacheable": same body, explicitly cacheable (cache-hit scenario)
        location /cacheable {{ add_header X-Origin {i}; add_header Cache-Control "public, max-age=300"; return 200 '{body}'; }}
    }}""")
    return nginx_main(tmp, "origin") + "http {\n" + nginx_http_common(tmp, "origin") + \
        "    default_type application/json;\n" + "\n".join(servers) + "\n}\n"


def nginx_proxy_conf(tmp, port, sc):
    s = sc.get("nginx") or {}
    ups = "\n".join(f"        server {HOST}:{p};" for p in ORIGIN_PORTS)
    return nginx_main(tmp, "nginx") + "http {\n" + nginx_http_common(tmp, "nginx") + f"""
    upstream origins {{
{ups}
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
{_lines(s.get("http"))}
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{_lines(s.get("location"))}
        }}
    }}
}}
"""


def haproxy_conf(port, sc):
    s = sc.get("haproxy") or {}
    srv = "\n".join(f"    server o{i} {HOST}:{p}" for i, p in enumerate(ORIGIN_PORTS, 1))
    return f"""global
    nbthread 1
    maxconn 4096
{_lines(s.get("global"))}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
    # reuse idle server connections across client connections, like nginx's keepalive pool
    http-reuse always

{_lines(s.get("sections"))}

frontend fe
    bind {HOST}:{port}
{_lines(s.get("frontend"))}
    default_backend origins

backend origins
    balance roundrobin
{_lines(s.get("backend"))}
{srv}
"""


def haproxy_tcp_conf(port):
    """Layer-4 passthrough (no HTTP parsing): a cheap 'null proxy' that approximates the
    best any proxy could do with this load side. Each client connection is pinned to one
    origin connection (round-robin per connection)."""
    srv = "\n".join(f"    server o{i} {HOST}:{p}" for i, p in enumerate(ORIGIN_PORTS, 1))
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind {HOST}:{port}
    default_backend origins

backend origins
    balance roundrobin
{srv}
"""


# ---------------------------------------------------------------- scenarios
def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt_hs256(secret, claims):
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def list_scenarios():
    out = []
    if os.path.isdir(SCENARIO_DIR):
        for f in sorted(os.listdir(SCENARIO_DIR)):
            if f.endswith(".json"):
                try:
                    with open(os.path.join(SCENARIO_DIR, f)) as fh:
                        d = json.load(fh).get("description", "")
                except Exception as e:
                    d = f"(unreadable: {e})"
                out.append((f[:-5], d))
    return out


def load_scenario(name, tmp):
    path = name if (name.endswith(".json") and os.path.exists(name)) else \
        os.path.join(SCENARIO_DIR, name + ".json")
    if not os.path.exists(path):
        raise SystemExit(f"unknown scenario {name!r}; have: "
                         f"{', '.join(n for n, _ in list_scenarios())}")
    with open(path) as f:
        sc = json.load(f)
    sc["name"] = sc.get("name") or os.path.basename(path)[:-5]
    subst = {"{{TMP}}": tmp}
    jwt = sc.get("jwt")
    if jwt:
        if jwt.get("alg", "HS256") != "HS256":
            raise SystemExit("only HS256 tokens are generated by the harness")
        now = int(time.time())
        claims = dict(jwt.get("claims") or {})
        claims.setdefault("iat", now)
        claims.setdefault("exp", now + int(jwt.get("ttl_s", 86400)))
        jwt["token"] = make_jwt_hs256(jwt["secret"], claims)
        subst["{{JWT_SECRET}}"] = jwt["secret"]
        subst["{{JWT_TOKEN}}"] = jwt["token"]

    def walk(x):
        if isinstance(x, str):
            for k, v in subst.items():
                x = x.replace(k, v)
            return x
        if isinstance(x, list):
            return [walk(i) for i in x]
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        return x
    sc = walk(sc)
    if sc.get("lua") and not os.path.isabs(sc["lua"]):
        sc["lua"] = os.path.join(HERE, sc["lua"])
    return sc


# ---------------------------------------------------------------- wrk
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$",
                                     out, re.M):
        r[f"p{pct}_ms"] = float(val) * _UNIT_MS[unit]
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def wrk_argv(args, url, duration):
    a = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
         "--latency", "--timeout", f"{args.wrk_timeout}s"]
    for h in args.header:
        a += ["-H", h]
    if args.lua:
        a += ["-s", args.lua]
    return pinned(args.load_cpu, a + [url])


def run_wrk(args, url, duration):
    argv = wrk_argv(args, url, duration)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, preexec_fn=_child_setup)
    try:
        out, _ = p.communicate(timeout=duration + 30)
    finally:
        if p.poll() is None:        # timeout, Ctrl-C, SIGTERM: kill wrk by PID and reap it
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed rc={p.returncode}: {out.strip()[-500:]}")
    return parse_wrk(out), out


# ---------------------------------------------------------------- contenders
class Contender:
    def __init__(self, name, kind, port, command=None, note=None):
        self.name, self.kind, self.port, self.command, self.note = name, kind, port, command, note
        self.proc = None
        self.rounds = []
        self.sanity = None
        self.failed = None
        self.warmed = False

    @property
    def url_base(self):
        return f"http://{HOST}:{self.port}"


def parse_extra(spec):
    m = re.match(r"^([A-Za-z0-9_.-]+)=(.+)@(\d+)$", spec, re.S)
    if not m:
        raise SystemExit(f"bad contender {spec!r}: expected name=<command>@<port>")
    name, cmd, port = m.group(1), m.group(2).strip(), int(m.group(3))
    if not (1024 <= port <= 65535):
        raise SystemExit(f"bad port in {spec!r}")
    return Contender(name, "extra", port, command=cmd)


def probe(port, path, headers, n=4):
    """A few keepalive GETs through the proxy; returns statuses/origins/body sizes."""
    hdrs = {}
    for h in headers:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    statuses, origins, sizes = [], [], set()
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        for _ in range(n):
            conn.request("GET", path, headers=hdrs)
            r = conn.getresponse()
            body = r.read()
            statuses.append(r.status)
            origins.append(r.getheader("X-Origin"))
            sizes.add(len(body))
    finally:
        conn.close()
    return {"statuses": statuses, "origins_seen": sorted({o for o in origins if o}),
            "body_bytes": sorted(sizes)}


def start_contender(c, args, sc, tmp, nginx_bin, haproxy_bin):
    if c.kind == "direct":
        return
    logpath = os.path.join(tmp, f"{c.name}.log")
    if c.kind == "nginx":
        conf = os.path.join(tmp, "nginx-proxy.conf")
        with open(conf, "w") as f:
            f.write(nginx_proxy_conf(tmp, c.port, sc))
        argv = [nginx_bin, "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "nginx.error.log")]
        env = None
    elif c.kind in ("haproxy", "haproxy-tcp"):
        conf = os.path.join(tmp, c.kind + ".cfg")
        with open(conf, "w") as f:
            f.write(haproxy_conf(c.port, sc) if c.kind == "haproxy" else haproxy_tcp_conf(c.port))
        argv = [haproxy_bin, "-db", "-f", conf]
        env = None
    else:
        cmd = c.command
        if not re.search(r"[;&|()\n]", cmd):
            cmd = "exec " + cmd           # so the PID we hold is the proxy itself
        argv = ["/bin/sh", "-c", cmd]
        env = dict(os.environ)
        env.update({
            "PROXYBENCH_PORT": str(c.port),
            "PROXYBENCH_LISTEN": f"{HOST}:{c.port}",
            "PROXYBENCH_ORIGINS": ",".join(f"{HOST}:{p}" for p in ORIGIN_PORTS),
            "PROXYBENCH_SCENARIO": sc["name"],
            "PROXYBENCH_PATH": args.path,
            "PROXYBENCH_TMP": tmp,
        })
        if sc.get("jwt"):
            env["PROXYBENCH_JWT_ALG"] = sc["jwt"].get("alg", "HS256")
            env["PROXYBENCH_JWT_SECRET"] = sc["jwt"]["secret"]
    c.proc = Proc(c.name, pinned(args.proxy_cpu, argv), logpath, env=env).start()
    wait_port(c.proc, c.port, args.start_timeout)


# ---------------------------------------------------------------- reporting
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(contenders, baseline):
    by = {c.name: c for c in contenders}
    for c in contenders:
        rs = [r for r in c.rounds if r.get("rps")]
        rps = [r["rps"] for r in rs]
        s = {
            "rounds_ok": len(rs),
            "median_rps": med(rps),
            "min_rps": min(rps) if rps else None,
            "max_rps": max(rps) if rps else None,
            "median_p50_ms": med([r.get("p50_ms") for r in rs]),
            "median_p99_ms": med([r.get("p99_ms") for r in rs]),
            "peak_rss_mib": round(c.proc.peak_rss_mib(), 1) if c.proc else None,
            "procs": c.proc.max_procs if c.proc else None,
            "threads": c.proc.max_threads if c.proc else None,
            "cpus_allowed": sorted(c.proc.cpus_allowed) if c.proc else None,
            "proxy_cpu_us_per_req": med([r.get("proxy_cpu_us_per_req") for r in rs]),
            "cpu0_busy_pct": med([r.get("cpu_busy_pct", {}).get("proxy") for r in rs]),
            "cpu1_busy_pct": med([r.get("cpu_busy_pct", {}).get("load") for r in rs]),
            "origin_cpu_pct": med([r.get("origin_cpu_pct") for r in rs]),
            "background_cpu_pct": med([r.get("background_cpu_pct") for r in rs]),
            "steal_pct": med([r.get("steal_pct") for r in rs]),
            "errors": sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in c.rounds),
        }
        s["spread_pct"] = (100.0 * (s["max_rps"] - s["min_rps"]) / s["median_rps"]
                           if rps and s["median_rps"] else None)
        c.summary = s
    for c in contenders:
        s = c.summary
        for key, ref in (("vs_" + baseline, by.get(baseline)), ("vs_direct", by.get("direct"))):
            if ref and not ref.failed and ref.summary["median_rps"] and s["median_rps"]:
                s["ratio_" + key] = s["median_rps"] / ref.summary["median_rps"]
                # paired: per-round ratio (same round = same machine conditions), then median
                ref_by_round = {r["round"]: r["rps"] for r in ref.rounds if r.get("rps")}
                pairs = [r["rps"] / ref_by_round[r["round"]] for r in c.rounds
                         if r.get("rps") and r["round"] in ref_by_round]
                s["paired_ratio_" + key] = med(pairs)
            else:
                s["ratio_" + key] = None
                s["paired_ratio_" + key] = None
        ref = by.get(baseline)
        ref_us = ref.summary["proxy_cpu_us_per_req"] if ref else None
        # CPU efficiency vs baseline: baseline's proxy CPU per request / ours (>1 = cheaper)
        s["cpu_efficiency_vs_" + baseline] = (ref_us / s["proxy_cpu_us_per_req"]
                                             if ref_us and s["proxy_cpu_us_per_req"] else None)
    for c in contenders:
        c.summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.summary.items()}


def fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def render_table(contenders, baseline):
    hdr = ["contender", "req/s", "spread", "p50 ms", "p99 ms", "RSS MiB", "cpu us/req",
           "cpu0%", "cpu1%", "orig%", "bg%", f"vs {baseline}", "paired", "vs direct",
           "cpu-eff", "errors"]
    rows = []
    for c in contenders:
        s = c.summary
        name = c.name + ("*" if c.note else "")
        if c.failed:
            rows.append([name, "FAILED: " + c.failed.splitlines()[0][:90]] + [""] * (len(hdr) - 2))
            continue
        rows.append([
            name, fmt(s["median_rps"], ".0f"), fmt(s["spread_pct"], ".1f") + "%",
            fmt(s["median_p50_ms"], ".3f"), fmt(s["median_p99_ms"], ".3f"),
            fmt(s["peak_rss_mib"], ".1f"), fmt(s["proxy_cpu_us_per_req"], ".2f"),
            fmt(s["cpu0_busy_pct"], ".0f"), fmt(s["cpu1_busy_pct"], ".0f"),
            fmt(s["origin_cpu_pct"], ".0f"), fmt(s["background_cpu_pct"], ".0f"),
            fmt(s.get("ratio_vs_" + baseline), ".3f"),
            fmt(s.get("paired_ratio_vs_" + baseline), ".3f"), fmt(s.get("ratio_vs_direct"), ".3f"),
            fmt(s.get("cpu_efficiency_vs_" + baseline), ".3f"),
            str(s["errors"]) + ("!" if s["errors"] else ""),
        ])
    ok_rows = [r for r in rows if not r[1].startswith("FAILED")]
    widths = [max([len(hdr[i])] + [len(r[i]) for r in ok_rows]) for i in range(len(hdr))]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(hdr, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r[1].startswith("FAILED"):
            lines.append(r[0].ljust(widths[0]) + "  " + r[1])
        else:
            lines.append("  ".join(v.rjust(w) if i else v.ljust(w)
                                   for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def table_notes(contenders, args):
    notes = []
    for c in contenders:
        if c.note:
            notes.append(f"* {c.name}: {c.note}")
    for c in contenders:
        s = getattr(c, "summary", None)
        if not s or c.failed or c.kind == "direct":
            continue
        if s["cpu0_busy_pct"] is not None and s["cpu0_busy_pct"] < 90:
            notes.append(f"! {c.name}: CPU {args.proxy_cpu} only {s['cpu0_busy_pct']:.0f}% busy -> "
                         f"proxy was not the bottleneck; its ratio is compressed toward 1 "
                         f"(compare 'cpu us/req' instead)")
        if s["errors"]:
            notes.append(f"! {c.name}: {s['errors']} non-2xx/socket errors -- its req/s is not comparable")
        if s["threads"] and s["threads"] > s["procs"] and c.kind == "extra":
            notes.append(f"i {c.name}: {s['procs']} process(es), {s['threads']} threads "
                         f"(all confined to CPU {args.proxy_cpu})")
    sat = [c.name for c in contenders if getattr(c, "summary", None) and not c.failed
           and c.kind != "direct" and (c.summary["cpu1_busy_pct"] or 0) >= 95]
    if sat:
        notes.append(f"i load side (CPU {args.load_cpu}) >=95% busy for: {', '.join(sat)} -> "
                     f"req/s of a faster proxy is capped by wrk+origin; add haproxy-tcp to "
                     f"--contenders to see that ceiling, and read cpu-eff")
    bgs = [c.summary["background_cpu_pct"] for c in contenders
           if getattr(c, "summary", None) and c.summary["background_cpu_pct"] is not None]
    if bgs and max(bgs) > 10:
        notes.append(f"! background (non-benchmark) CPU up to {max(bgs):.0f}% of a core during "
                     f"rounds: other load on this machine is skewing results")
    return notes


def report(files):
    """Reprint saved results and compare ratios across runs."""
    from types import SimpleNamespace
    runs = []
    for fpath in files:
        with open(fpath) as f:
            d = json.load(f)
        base = d["config"]["baseline"]
        cs = [SimpleNamespace(name=c["name"], note=c.get("note"), failed=c.get("failed"),
                              kind=c["kind"], summary=c["summary"]) for c in d["contenders"]]
        print(f"== {fpath}  ({d['scenario']['name']}, {d['started_at']})")
        print(render_table(cs, base))
        runs.append((fpath, base, {c.name: c.summary for c in cs if c.summary and not c.failed}))
    if len(runs) < 2:
        return 0
    base = runs[0][1]
    keys = [("ratio_vs_" + base, f"vs {base}"), ("paired_ratio_vs_" + base, "paired"),
            ("ratio_vs_direct", "vs direct"), ("cpu_efficiency_vs_" + base, "cpu-eff")]
    names = [n for n in runs[0][2] if all(n in r[2] for r in runs)]
    print(f"\n== ratio movement across {len(runs)} runs (range = max - min, and as % of mean)")
    print(f"{'contender':12s} " + " ".join(f"{lbl:>26s}" for _, lbl in keys))
    for n in names:
        cells = []
        for k, _ in keys:
            vals = [r[2][n].get(k) for r in runs]
            if any(v is None for v in vals):
                cells.append(f"{'-':>26s}")
                continue
            rng = max(vals) - min(vals)
            mean = sum(vals) / len(vals)
            cells.append(f"{'/'.join(f'{v:.3f}' for v in vals[:3]):>15s} "
                         f"{rng:.3f} {100 * rng / mean:4.1f}%".rjust(26))
        print(f"{n:12s} " + " ".join(cells))
    return 0


# ---------------------------------------------------------------- main
def versions(nginx_bin, haproxy_bin):
    def first(argv):
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (cp.stdout + cp.stderr).strip().splitlines()[0]
        except Exception as e:
            return f"? ({e})"
    return {"wrk": first(["wrk", "--version"]), "nginx": first([nginx_bin, "-v"]),
            "haproxy": first([haproxy_bin, "-v"]), "kernel": platform.release(),
            "python": platform.python_version()}


def background_check(args):
    """Measure CPU busy on both CPUs for 1 s before starting; optionally wait for idle."""
    deadline = time.time() + args.wait_idle
    while True:
        a = cpu_times()
        time.sleep(1.0)
        d = cpu_delta(a, cpu_times())
        busy = {c: round(v["busy"], 1) for c, v in d.items()}
        worst = max(busy.get(args.proxy_cpu, 0), busy.get(args.load_cpu, 0))
        if worst <= args.idle_threshold or time.time() >= deadline:
            break
        log(f"machine busy ({busy}); waiting for idle (up to {args.wait_idle}s)...")
        time.sleep(2)
    if worst > args.idle_threshold:
        log(f"WARNING: CPUs not idle before start: busy% {busy} -- results will be noisy")
    return {"busy_pct_before_start": busy, "loadavg": open("/proc/loadavg").read().split()[:3]}


def main():
    ap = argparse.ArgumentParser(
        prog="proxybench.sh",
        description="Side-by-side HTTP reverse-proxy benchmark on loopback (see benches/compare/README.md).",
        epilog="extra contenders: positional  name='<command started in foreground>@<port>'. "
               "The command gets PROXYBENCH_PORT / PROXYBENCH_LISTEN / PROXYBENCH_ORIGINS / "
               "PROXYBENCH_SCENARIO (+ PROXYBENCH_JWT_SECRET in the jwt scenario) in its env.")
    ap.add_argument("extra", nargs="*", help="name=<command>@<port>")
    ap.add_argument("--contenders", default="direct,nginx,haproxy",
                    help="built-ins to include, comma list of direct,nginx,haproxy,haproxy-tcp "
                         "(default direct,nginx,haproxy; haproxy-tcp = L4 passthrough, an "
                         "approximate ceiling for any proxy on this load side)")
    ap.add_argument("--scenario", default="baseline",
                    help="scenario name (bench/scenarios/<name>.json) or path to a .json")
    ap.add_argument("--list-scenarios", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per contender")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds idle between wrk runs")
    ap.add_argument("-c", "--connections", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--wrk-timeout", type=int, default=2, help="wrk per-request timeout (s)")
    ap.add_argument("--path", default=None, help="request path (default: scenario's, else /)")
    ap.add_argument("-H", "--header", action="append", default=[],
                    help="extra request header for wrk (repeatable), e.g. -H 'Authorization: Bearer x'")
    ap.add_argument("--lua", default=None, help="wrk Lua script (passed as wrk -s)")
    ap.add_argument("--baseline", default="nginx", help="contender the ratio column is against")
    ap.add_argument("--proxy-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--nginx-port", type=int, default=19080)
    ap.add_argument("--haproxy-port", type=int, default=19081)
    ap.add_argument("--haproxy-tcp-port", type=int, default=19082)
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--rotate", action="store_true",
                    help="rotate contender order each round (ABC, BCA, CAB) instead of ABC ABC")
    ap.add_argument("--wait-idle", type=int, default=0,
                    help="wait up to N s for the CPUs to be idle before starting")
    ap.add_argument("--idle-threshold", type=float, default=15.0, help="busy%% counted as idle")
    ap.add_argument("--out", default=None, help="write results JSON here")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--report", nargs="+", metavar="JSON",
                    help="run nothing: reprint the tables of earlier --out files and, with 2+, "
                         "how much each ratio moved between them (noise estimate)")
    args = ap.parse_args()
    if args.report:
        return report(args.report)

    if args.list_scenarios:
        for n, d in list_scenarios():
            print(f"{n:14s} {d}")
        return 0
    if not (1 <= args.rounds <= MAX_ROUNDS and 1 <= args.duration <= MAX_DURATION
            and 0 <= args.warmup <= MAX_WARMUP and 0 <= args.pause <= 30
            and 1 <= args.connections <= 4000 and 1 <= args.threads <= args.connections):
        raise SystemExit(f"bounds: rounds 1..{MAX_ROUNDS}, duration 1..{MAX_DURATION}, "
                         f"warmup 0..{MAX_WARMUP}, pause 0..30, connections 1..4000, "
                         f"1 <= threads <= connections")
    ncpu = os.cpu_count() or 1
    if args.proxy_cpu == args.load_cpu or max(args.proxy_cpu, args.load_cpu) >= ncpu:
        raise SystemExit(f"need two distinct CPUs < {ncpu} for --proxy-cpu/--load-cpu")

    nginx_bin, haproxy_bin = which("nginx"), which("haproxy")
    for tool, path in (("wrk", which("wrk")), ("taskset", which("taskset")),
                       ("nginx", nginx_bin)):
        if not path:
            raise SystemExit(f"{tool} not found (run via proxybench.sh, which installs it)")

    # contenders
    builtin = [x.strip() for x in args.contenders.split(",") if x.strip()]
    contenders = []
    for b in builtin:
        if b == "direct":
            contenders.append(Contender("direct", "direct", ORIGIN_PORTS[0]))
        elif b == "nginx":
            contenders.append(Contender("nginx", "nginx", args.nginx_port))
        elif b == "haproxy":
            if not haproxy_bin:
                raise SystemExit("haproxy not found")
            contenders.append(Contender("haproxy", "haproxy", args.haproxy_port))
        elif b == "haproxy-tcp":
            if not haproxy_bin:
                raise SystemExit("haproxy not found")
            contenders.append(Contender(
                "haproxy-tcp", "haproxy-tcp", args.haproxy_tcp_port,
                note="L4 TCP passthrough, no HTTP parsing/keepalive pooling/scenario features: "
                     "approximate ceiling for any proxy with this load side"))
        else:
            raise SystemExit(f"unknown built-in contender {b!r}")
    contenders += [parse_extra(e) for e in args.extra]
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise SystemExit(f"duplicate contender names: {names}")
    ports = [c.port for c in contenders if c.kind != "direct"]
    if len(set(ports)) != len(ports) or set(ports) & set(ORIGIN_PORTS):
        raise SystemExit(f"port clash among contenders/origins: {ports} / {ORIGIN_PORTS}")
    for p in list(ORIGIN_PORTS) + ports:
        if port_open(p):
            raise SystemExit(f"something is already listening on {HOST}:{p}; refusing to "
                             f"benchmark a process this harness did not start (a leftover "
                             f"from a killed run is listed in /tmp/proxybench.*/pids)")

    tmp = tempfile.mkdtemp(prefix="proxybench.")
    os.chmod(tmp, 0o755)          # nginx workers run as 'nobody' and need to traverse it
    global PIDS_FILE
    PIDS_FILE = os.path.join(tmp, "pids")
    become_subreaper()
    sc = load_scenario(args.scenario, tmp)
    if args.path is None:
        args.path = sc.get("path", "/")
    if not args.path.startswith("/"):
        raise SystemExit("--path must start with /")
    args.header = list(sc.get("headers") or []) + args.header
    if args.lua is None and sc.get("lua"):
        args.lua = sc["lua"]
    if args.lua:
        args.lua = os.path.abspath(args.lua)
        if not os.path.isfile(args.lua):
            raise SystemExit(f"lua script not found: {args.lua}")
    for c in contenders:
        sec = sc.get(c.kind) if c.kind in ("nginx", "haproxy") else None
        if sec and sec.get("note"):
            c.note = sec["note"]
    contenders = [c for c in contenders
                  if not (c.kind in ("nginx", "haproxy") and (sc.get(c.kind) or {}).get("skip"))]

    per_c = args.warmup + args.rounds * (args.duration + args.pause)
    log(f"scenario={sc['name']} path={args.path} contenders={[c.name for c in contenders]} "
        f"rounds={args.rounds} x {args.duration}s, -c{args.connections} -t{args.threads}; "
        f"estimated runtime ~{int(len(contenders) * per_c + 10)}s; tmp={tmp}")

    result = {"tool": "proxybench", "format": 1,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": {"hostname": platform.node(), "ncpu": ncpu,
                       "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                          if l.startswith("model name")), "?")},
              "versions": versions(nginx_bin, haproxy_bin or "haproxy"),
              "config": {k: getattr(args, k) for k in (
                  "rounds", "duration", "warmup", "pause", "connections", "threads", "path",
                  "header", "lua", "baseline", "proxy_cpu", "load_cpu", "rotate", "wrk_timeout")},
              "scenario": {k: sc.get(k) for k in ("name", "description", "notes")}}
    result["wrk_command"] = " ".join(wrk_argv(args, "http://127.0.0.1:PORT" + args.path,
                                              args.duration))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)    # explicit: SIGINT may arrive ignored (background job)
    wd = start_watchdog(PIDS_FILE, 3600 + len(contenders) * per_c * 2)
    rc = 0
    try:
        result["preflight"] = background_check(args)

        # origin
        oconf = os.path.join(tmp, "origin.conf")
        with open(oconf, "w") as f:
            f.write(origin_conf(tmp))
        origin = Proc("origin", pinned(args.load_cpu, [nginx_bin, "-p", tmp + "/", "-c", oconf,
                                                       "-e", os.path.join(tmp, "origin.error.log")]),
                      os.path.join(tmp, "origin.log")).start()
        for p in ORIGIN_PORTS:
            wait_port(origin, p, args.start_timeout)
        for p in ORIGIN_PORTS:
            pr = probe(p, args.path, args.header, n=1)
            if pr["statuses"] != [200]:
                raise RuntimeError(f"origin {p} answered {pr}")

        # contenders
        for c in contenders:
            try:
                start_contender(c, args, sc, tmp, nginx_bin, haproxy_bin)
                c.sanity = probe(c.port, args.path, args.header)
                if args.header:     # e.g. jwt: does the proxy reject a request without them?
                    c.sanity["status_without_extra_headers"] = probe(
                        c.port, args.path, [], n=1)["statuses"][0]
                if any(s != 200 for s in c.sanity["statuses"]):
                    raise RuntimeError(f"sanity check: statuses {c.sanity['statuses']}")
                log(f"{c.name}: up on {HOST}:{c.port}"
                    + (f" pid {c.proc.pid}" if c.proc else "")
                    + f"; sanity {c.sanity}")
            except Exception as e:
                c.failed = str(e)
                log(f"{c.name}: FAILED to start/sanity-check: {e}")
                if c.proc:
                    c.proc.stop()
        live = [c for c in contenders if not c.failed]
        if not live:
            raise RuntimeError("no contender came up")

        # interleaved rounds
        for rnd in range(args.rounds):
            order = live[rnd % len(live):] + live[:rnd % len(live)] if args.rotate else live
            for c in order:
                if c.failed:
                    continue
                url = c.url_base + args.path
                try:
                    if not c.warmed and args.warmup > 0:
                        run_wrk(args, url, args.warmup)
                        c.warmed = True
                        time.sleep(args.pause)
                    ot0 = origin.cpu_ticks()
                    pt0 = c.proc.cpu_ticks() if c.proc else {}
                    all0 = user_proc_ticks()
                    ch0 = children_cpu_s()
                    ct0 = cpu_times()
                    t0 = time.time()
                    res, raw = run_wrk(args, url, args.duration)
                    wall = time.time() - t0
                    ct1 = cpu_times()
                    wrk_cpu = children_cpu_s() - ch0
                    all1 = user_proc_ticks()
                    pt1 = c.proc.cpu_ticks() if c.proc else {}
                    ot1 = origin.cpu_ticks()
                    if c.proc:
                        c.proc.sample()
                        if not c.proc.alive():
                            raise RuntimeError(f"process exited during round:\n{c.proc.log_tail()}")

                    def dticks(a, b):
                        return sum(max(0, t - a.get(k, 0)) for k, t in b.items())
                    proxy_s = dticks(pt0, pt1) / CLK_TCK
                    origin_s = dticks(ot0, ot1) / CLK_TCK
                    cd = cpu_delta(ct0, ct1)
                    # background = CPU of every other user process (not ours, not kthreads)
                    ours = set(pt1) | set(ot1)
                    bg_s = sum(max(0, t - all0.get(k, 0)) for k, t in all1.items()
                               if k not in ours and k[0] not in (os.getpid(), wd.pid)) / CLK_TCK
                    res.update({
                        "round": rnd + 1,
                        "wall_s": round(wall, 3),
                        "cpu_busy_pct": {"proxy": round(cd[args.proxy_cpu]["busy"], 1),
                                         "load": round(cd[args.load_cpu]["busy"], 1)},
                        "steal_pct": round(max(v["steal"] for v in cd.values()), 1),
                        "proxy_cpu_s": round(proxy_s, 2) if c.proc else None,
                        "proxy_cpu_us_per_req": (round(1e6 * proxy_s / res["requests"], 2)
                                                 if c.proc and res.get("requests") else None),
                        "origin_cpu_pct": round(100 * origin_s / wall, 1),
                        "wrk_cpu_pct": round(100 * wrk_cpu / wall, 1),
                        "background_cpu_pct": round(100 * bg_s / wall, 1),
                    })
                    if res["rps"] is None:
                        raise RuntimeError(f"could not parse wrk output:\n{raw[-800:]}")
                    c.rounds.append(res)
                    log(f"round {rnd + 1}/{args.rounds} {c.name:>10}: {res['rps']:>9.0f} req/s "
                        f"p50 {res.get('p50_ms', 0):.3f}ms p99 {res.get('p99_ms', 0):.3f}ms "
                        f"cpu{args.proxy_cpu} {res['cpu_busy_pct']['proxy']:.0f}% "
                        f"cpu{args.load_cpu} {res['cpu_busy_pct']['load']:.0f}% "
                        f"bg {res['background_cpu_pct']:.0f}%"
                        + (f" ERRORS non2xx={res['non2xx']} sock={res['socket_errors']}"
                           if res["non2xx"] or res["socket_errors"] else ""))
                except subprocess.TimeoutExpired:
                    c.failed = "wrk timed out"
                    log(f"{c.name}: wrk timed out; dropping contender")
                except RuntimeError as e:
                    c.failed = str(e)
                    log(f"{c.name}: FAILED in round {rnd + 1}: {e}")
                time.sleep(args.pause)
        for c in contenders:
            if c.proc:
                c.proc.sample()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        rc = 130
    except Exception as e:
        log(f"ERROR: {e}")
        rc = 1
    finally:
        cleanup()
        wd.terminate()                # our own watchdog, by PID
        wd.wait()
        if args.keep_tmp or rc == 1:
            log(f"temp dir kept (configs, logs, pids): {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if rc == 130 or not any(c.rounds for c in contenders):
        return rc or 1
    summarize(contenders, args.baseline)
    table = render_table(contenders, args.baseline)
    notes = table_notes(contenders, args)
    hdr = (f"proxybench  scenario={sc['name']}  path={args.path}  wrk -t{args.threads} "
           f"-c{args.connections} -d{args.duration}s x {args.rounds} rounds (median)  "
           f"proxy on CPU {args.proxy_cpu}, wrk+origin on CPU {args.load_cpu}\n"
           f"ratios >1 = better than {args.baseline}. vs {args.baseline}: ratio of median req/s; "
           f"paired: median of same-round ratios; cpu-eff: {args.baseline}'s cpu us/req / this one's")
    print(hdr)
    print(table)
    for n in notes:
        print(n)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["contenders"] = [{
        "name": c.name, "kind": c.kind, "port": c.port, "command": c.command, "note": c.note,
        "failed": c.failed, "sanity": c.sanity, "summary": getattr(c, "summary", None),
        "rounds": c.rounds} for c in contenders]
    result["table"] = hdr + "\n" + table
    result["notes"] = notes
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        log(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_watchdog":
        sys.exit(watchdog(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    sys.exit(main())
