#!/usr/bin/env bash
# proxybench.sh -- honest side-by-side HTTP reverse-proxy benchmark on ONE machine, ONE run.
#
# Compares reverse proxies (nginx, haproxy, and any proxy you pass as name=<cmd>@<port>)
# against each other and against `direct` (no proxy), reporting RATIOS, because absolute
# numbers on a shared, virtualised 2-core box are noisy. Loopback (127.0.0.1) only.
#
# Usage:
#   benches/compare/proxybench.sh [--out results.json] [--rounds 3] [--duration 10] [-c 64]
#                       [--scenario baseline|cache-hit|jwt|<file.json>] [--path /x]
#                       [-H 'Header: value' ...] [--lua script.lua]
#                       [--contenders direct,nginx,haproxy]
#                       ['mine=/path/to/proxy --flags@19090' ...]
#   benches/compare/proxybench.sh --report run1.json run2.json   # reprint + ratio movement (noise)
#   benches/compare/proxybench.sh --help | --list-scenarios
#
# CPU PLACEMENT (fairness on 2 cores) -- deliberate, keep it when comparing:
#   CPU 0 : the proxy under test, and nothing else we start. `taskset -c 0` is inherited by
#           all its threads and children, so every proxy gets exactly one core even if it is
#           multi-threaded; nginx runs worker_processes 1, haproxy nbthread 1, and extra
#           contenders should be configured for one worker thread too (e.g. Pingora threads: 1).
#   CPU 1 : wrk (-t1) and the origin nginx (1 worker, ports 19001+19002). This side does the
#           same work per request for every contender; `direct` (wrk -> origin) measures its
#           ceiling, so no proxy can beat `direct`, and a ratio is only informative while the
#           proxy's CPU 0 is ~100% busy (the table prints cpu0%/cpu1% to check).
#   Contenders run one at a time, interleaved round by round (A B C, A B C, ...), so machine
#   drift hits all of them alike; medians over rounds are reported.
#
# This wrapper only installs missing tools (wrk, nginx, haproxy; apt-get, nothing else) and
# then runs proxybench.py (python3 stdlib). Every process started is killed by PID on exit,
# error or Ctrl-C. Set PROXYBENCH_NO_INSTALL=1 to skip the install step.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

if [ "${PROXYBENCH_NO_INSTALL:-0}" != 1 ]; then
  need=()
  have wrk     || need+=(wrk)
  have nginx   || need+=(nginx)
  have haproxy || need+=(haproxy)
  have taskset || need+=(util-linux)
  have python3 || need+=(python3)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "proxybench: missing ${need[*]}; run as root or install them" >&2; exit 1
    fi
    echo "proxybench: installing ${need[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${need[@]}" >&2; then
      apt-get update >&2
      apt-get install -y --no-install-recommends "${need[@]}" >&2
    fi
  fi
fi

export PATH="$PATH:/usr/sbin:/sbin"
exec python3 "$HERE/proxybench.py" "$@"
