#!/usr/bin/env bash
# Load-test driver: starts two demo origins and edgegate (one worker thread, upstream keepalive,
# access log off) on free loopback ports, runs wrk against it and prints requests/s, latency
# percentiles, and the gateway's CPU per request and peak RSS.
#
#   benches/wrk/run.sh                         release build, 10 s, 64 connections, GET /
#   benches/wrk/run.sh --script paths.lua      200 distinct paths through a strip_prefix route
#   benches/wrk/run.sh --duration 30 --connections 256 --threads 2
#   benches/wrk/run.sh --binary path/to/edgegate
#   benches/wrk/run.sh --origin demo           origins: nginx (default when installed; fixed 101-byte
#                                              body, like ../shared/bench) or demo (examples/demo_origin)
#   benches/wrk/run.sh --modes plain,cache     one row per mode in the same run: plain proxying, and
#                                              the same route with `cache` on (every request a hit)
#   benches/wrk/run.sh --smoke                 2 s against the debug build; fails on any error
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration=10 connections=64 wrk_threads=1 script="" binary="" smoke=0 profile=release origin="" modes=plain
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --threads) wrk_threads="$2"; shift 2 ;;
    --script) script="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --origin) origin="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --smoke) smoke=1; duration=2; connections=8; profile=debug; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

"$root/scripts/install-deps.sh" test
cd "$root"
if [ "$profile" = release ]; then
  cargo build --release --bin edgegate --example demo_origin
else
  cargo build --bin edgegate --example demo_origin
fi
[ -n "$binary" ] || binary="$root/target/$profile/edgegate"
origin_bin="$root/target/$profile/examples/demo_origin"

source "$here/lib.sh"
take_port; origin1=$port; take_port; origin2=$port; take_port; proxy=$port; take_port; admin=$port

if [ -z "$origin" ]; then
  if command -v nginx >/dev/null 2>&1 && [ "$smoke" = 0 ]; then origin=nginx; else origin=demo; fi
fi
if [ "$origin" = nginx ]; then
  start_nginx_origin origin-1 "$origin1"
  start_nginx_origin origin-2 "$origin2"
else
  "$origin_bin" "127.0.0.1:$origin1" origin-1 2>"$tmp/origin1.log" & pids+=($!)
  "$origin_bin" "127.0.0.1:$origin2" origin-2 2>"$tmp/origin2.log" & pids+=($!)
fi
cpu_ticks() { awk '{print $14 + $15}' "/proc/$gateway_pid/stat"; }
wrk_args=(-t"$wrk_threads" -c"$connections" -d"${duration}s" --latency)
[ -n "$script" ] && wrk_args+=(-s "$here/$script")
ticks_per_sec=$(getconf CLK_TCK)
pct() { awk -v p="$1" '$1 == p {print $2}' "$tmp/wrk.out"; }

printf '%-10s %12s %10s %10s %10s %10s %12s %9s %7s\n' mode "requests/s" p50 p90 p99 requests "cpu us/req" "RSS MiB" errors
IFS=, read -r -a mode_list <<< "$modes"
for mode in "${mode_list[@]}"; do
  case "$mode" in
    plain) route_cache="" ;;
    cache) route_cache=", cache: { ttl: 1h }" ;;
    *) echo "run.sh: unknown mode $mode (plain, cache)" >&2; exit 2 ;;
  esac
  { config_preamble; two_origin_pool "$origin1" "$origin2"; cat <<YAML
routes:
  - { name: api, match: { path_prefix: /api/v1 }, strip_prefix: /api/v1, upstream: origins$route_cache }
  - { name: default, upstream: origins$route_cache }
YAML
  } > "$tmp/edgegate.yaml"
  start_edgegate "$binary" "$tmp/edgegate.yaml"

  before=$(cpu_ticks)
  wrk "${wrk_args[@]}" "http://127.0.0.1:$proxy/" > "$tmp/wrk.out"
  after=$(cpu_ticks)
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$gateway_pid/status")
  requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out")
  errors=$(wrk_errors "$tmp/wrk.out")
  cpu_us_per_req=$(awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v r="$requests" 'BEGIN { if (r > 0) printf "%.1f", t / hz * 1e6 / r; else print "n/a" }')
  printf '%-10s %12s %10s %10s %10s %10s %12s %9s %7s\n' "$mode" "$rps" "$(pct 50%)" "$(pct 90%)" "$(pct 99%)" "$requests" \
    "$cpu_us_per_req" "$((rss_kib / 1024))" "$errors"
  stop_edgegate

  if [ "$smoke" = 1 ]; then
    [ "${requests:-0}" -gt 0 ] || { echo "smoke: wrk completed no request ($mode)" >&2; exit 1; }
    [ "$errors" = 0 ] || { echo "smoke: $errors errors ($mode)" >&2; cat "$tmp/wrk.out" >&2; exit 1; }
  fi
done
echo "($profile build; wrk -t$wrk_threads -c$connections -d${duration}s${script:+ -s $script}; gateway: 1 worker thread, access log off; origins: 2 x $origin)"
[ "$smoke" = 1 ] && echo "smoke: ok"
exit 0
