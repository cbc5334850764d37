#!/usr/bin/env bash
# Zero-downtime upgrade under load: edgegate in front of two nginx origins, wrk at high
# concurrency, and `edgegate run -u` (a new process taking over the listeners while the old one
# drains) performed several times mid-run. Prints wrk's totals; any failed request is an error.
#
#   benches/wrk/upgrade.sh                        release build, 3 upgrades, 256 connections, 40 s
#   benches/wrk/upgrade.sh --upgrades 5 --connections 512 --binary PATH [--next-binary PATH]
#
# --next-binary upgrades to another build (the first process runs --binary), as an operator
# replacing the installed binary would.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
upgrades=3 connections=256 binary="" next_binary="" every=9
while [ $# -gt 0 ]; do
  case "$1" in
    --upgrades) upgrades="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --next-binary) next_binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "upgrade.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

"$root/scripts/install-deps.sh" bench
cd "$root"
source "$here/lib.sh"
release_binary
[ -n "$next_binary" ] || next_binary="$binary"

take_port; origin1=$port; take_port; origin2=$port; take_port; proxy=$port; take_port; admin=$port
start_nginx_origin origin-1 "$origin1"
start_nginx_origin origin-2 "$origin2"
grace_period=5s
{ config_preamble; two_origin_pool "$origin1" "$origin2"; cat <<YAML
routes:
  - { name: all, upstream: origins }
YAML
} > "$tmp/edgegate.yaml"
start_edgegate "$binary" "$tmp/edgegate.yaml"

duration=$(( (upgrades + 1) * every ))
ulimit -n 65536 2>/dev/null || true
wrk -t2 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$proxy/" > "$tmp/wrk.out" &
wrk_pid=$!
current=$gateway_pid
for round in $(seq 1 "$upgrades"); do
  sleep 3
  RUST_LOG=warn "$next_binary" run -u -c "$tmp/edgegate.yaml" 2>>"$tmp/edgegate.log" & pids+=($!)
  next=$!
  # The old process hands over its listeners, drains for 5 s, then finishes in-flight requests.
  for _ in $(seq 1 300); do kill -0 "$current" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$current" 2>/dev/null; then echo "upgrade $round: pid $current did not exit" >&2; exit 1; fi
  kill -0 "$next" 2>/dev/null || { echo "upgrade $round: the new process died:" >&2; cat "$tmp/edgegate.log" >&2; exit 1; }
  echo "upgrade $round: pid $current -> $next" >&2
  current=$next
done
wait "$wrk_pid"

requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
failed=$(wrk_errors "$tmp/wrk.out")
printf '%-10s %10s %10s %8s %8s\n' upgrades requests failed "req/s" p99
printf '%-10s %10s %10s %8s %8s\n' "$upgrades" "$requests" "$failed" "$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out")" \
  "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")"
echo "(wrk -t2 -c$connections -d${duration}s; two nginx origins; one upgrade every ~${every}s)"
if [ "$failed" != 0 ]; then cat "$tmp/wrk.out" >&2; exit 1; fi
