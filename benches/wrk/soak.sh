#!/usr/bin/env bash
# Soak: the full gateway under wrk for a long time, with a backend that flaps and reloads, to show
# that memory, descriptors and latency stay flat and nothing fails that should not.
#
# Gateway: JWT (HS256) on every request, two rate-limit policies (one per client id that never
# refuses, one on /limited/ that refuses on purpose), a response cache, a JSON access log to a file,
# retries, health checks, three backends. Every minute the third backend stops for 30 s (killed,
# then started again on its port); every 5 minutes the configuration is reloaded (SIGHUP). wrk runs
# in 10 s slices; after each, the gateway's RSS, open descriptors and the slice's p99 go into a CSV.
# At the end: a PNG chart of the three (gnuplot) and a verdict line:
#   RSS growth over the last 20 minutes <= 5 %, descriptors flat (within 16), no non-2xx answer
#   other than the planned 429s and no socket error. Exit status 0 only when the verdict is PASS.
#
#   benches/wrk/soak.sh [--minutes 30] [--connections 16] [--binary PATH] [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
minutes=30 connections=16 binary="" out="$root/target/soak"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/install-deps.sh" soak
source "$here/lib.sh"
release_binary
(cd "$root" && cargo build --release --example demo_origin)
origin_bin="$root/target/release/examples/demo_origin"
mkdir -p "$out"

take_port; o1=$port; take_port; o2=$port; take_port; o3=$port; take_port; proxy=$port; take_port; admin=$port
start_origin() { "$origin_bin" "127.0.0.1:$1" "origin-$1" 2>>"$tmp/origins.log" & pids+=($!); last_origin=$!; }
start_origin "$o1"; start_origin "$o2"; start_origin "$o3"; flapping_pid=$last_origin

head -c 32 /dev/urandom | base64 > "$tmp/jwt.secret"
token=$("$binary" token --secret-file "$tmp/jwt.secret" --sub soak --ttl 1d)
write_config() { # write_config GENERATION: the config; the generation only changes a response header
  config_preamble | sed -e "s|^access_log: .*|access_log: { format: json, path: $tmp/access.log }|"
  cat <<YAML
auth:
  jwt:
    providers:
      main: { algorithms: [HS256], secret_file: $tmp/jwt.secret, forward_claims: { sub: X-User-ID } }
rate_limits:
  policies:
    per_client: { algorithm: sliding_window, key: header:X-Client-Id, limit: 1000000000, window: 1m }
    limited: { algorithm: fixed_window, key: global, limit: 50, window: 1s }
cache: { max_size: 64MiB }
upstreams:
  origins:
    selection: round_robin
    targets:
      - { address: "127.0.0.1:$o1" }
      - { address: "127.0.0.1:$o2" }
      - { address: "127.0.0.1:$o3" }
    health_check: { type: http, path: /health, interval: 1s, timeout: 500ms }
routes:
  - name: limited
    match: { path_prefix: /limited }
    upstream: origins
    auth: { jwt: main }
    rate_limits: [per_client, limited]
    retries: { attempts: 2, on: [connect_failure, reset, gateway_error] }
  - name: items
    upstream: origins
    auth: { jwt: main }
    rate_limits: [per_client]
    cache: { ttl: 2s }
    retries: { attempts: 2, on: [connect_failure, reset, gateway_error] }
    response_headers: { set: { X-Soak-Generation: "$1" } }
YAML
}
write_config 0 > "$tmp/edgegate.yaml"
start_edgegate "$binary" "$tmp/edgegate.yaml"

csv="$out/soak.csv"
echo "seconds,rss_kib,fds,p99_us,requests,planned_429,other_non2xx,socket_errors" > "$csv"
slices=$((minutes * 6)) started=$(date +%s) generation=0 down_since=""
echo "soak: $minutes min, $connections connections, gateway pid $gateway_pid; CSV in $csv" >&2
for slice in $(seq 1 "$slices"); do
  WRK_TOKEN="$token" wrk -t1 -c"$connections" -d10s -s "$here/soak.lua" "http://127.0.0.1:$proxy/" > "$tmp/wrk.out" 2>&1 || true
  now=$(( $(date +%s) - started ))
  line=$(grep '^soak ' "$tmp/wrk.out" || echo "soak p99_us=0 requests=0 planned_429=0 other_non2xx=0 socket_errors=1")
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"; }
  kill -0 "$gateway_pid" 2>/dev/null || { echo "soak: edgegate died" >&2; cat "$tmp/edgegate.log" >&2; exit 1; }
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$gateway_pid/status")
  fds=$(ls "/proc/$gateway_pid/fd" | wc -l)
  echo "$now,$rss,$fds,$(field p99_us),$(field requests),$(field planned_429),$(field other_non2xx),$(field socket_errors)" >> "$csv"
  # The third backend: down for the first 30 s of every minute after the first.
  if [ $((slice % 6)) -eq 0 ] && [ "$slice" -lt "$slices" ]; then
    kill "$flapping_pid" 2>/dev/null || true; wait "$flapping_pid" 2>/dev/null || true; down_since=$slice
  elif [ -n "$down_since" ] && [ "$slice" -eq $((down_since + 3)) ]; then
    start_origin "$o3"; flapping_pid=$last_origin; down_since=""
  fi
  if [ $((slice % 30)) -eq 0 ]; then
    generation=$((generation + 1)); write_config "$generation" > "$tmp/edgegate.yaml"; kill -HUP "$gateway_pid"
  fi
done
reloads=$(curl -fsS "http://127.0.0.1:$admin/metrics" | awk '/^edgegate_config_reloads_total\{result="success"\}/ {print $2}')

# Verdict: the last 20 minutes (or the last two thirds of a shorter run).
window=$(( minutes >= 30 ? 120 : slices * 2 / 3 ))
verdict=$(tail -n "$window" "$csv" | awk -F, -v reloads="${reloads:-0}" -v expected=$((slices / 30)) '
  NR == 1 { rss0 = $2; fmin = $3; fmax = $3 }
  { if ($2 > rmax) rmax = $2; if ($3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3 }
  END {
    growth = (rmax - rss0) * 100 / rss0
    ok = growth <= 5 && fmax - fmin <= 16
    printf "%.1f %d %d %d", growth, fmin, fmax, ok
  }')
read -r growth fmin fmax rss_ok <<<"$verdict"
totals=$(tail -n +2 "$csv" | awk -F, '{r += $5; p += $6; o += $7; e += $8} END {print r, p, o, e}')
read -r requests planned other errors <<<"$totals"
status=PASS
[ "$rss_ok" = 1 ] && [ "$other" = 0 ] && [ "$errors" = 0 ] && [ "${reloads:-0}" -ge $((slices / 30)) ] || status=FAIL
summary="soak $status: ${minutes} min, $requests requests, $planned planned 429s, $other other non-2xx, $errors socket errors; RSS growth over the last $((window / 6)) min ${growth} % (limit 5 %), descriptors $fmin..$fmax (limit: within 16), ${reloads:-0} reloads"
echo "$summary" | tee "$out/verdict.txt"

cat > "$tmp/chart.gp" <<GP
set terminal pngcairo size 1000,900 font ",10"
set output "$out/soak.png"
set datafile separator ","
set multiplot layout 3,1 title "edgegate soak: $(date -u +%F), $minutes min, $connections connections (one backend flapping every minute, SIGHUP every 5 min)"
set xlabel "minutes"
set grid
set key off
set yrange [0:*]
set ylabel "RSS (MiB)"
plot "$csv" every ::1 using (\$1/60):(\$2/1024) with lines lw 2
set ylabel "open descriptors"
plot "$csv" every ::1 using (\$1/60):3 with lines lw 2
set ylabel "p99 (ms)"
plot "$csv" every ::1 using (\$1/60):(\$4/1000) with lines lw 2
unset multiplot
GP
gnuplot "$tmp/chart.gp" && echo "chart: $out/soak.png" >&2
[ "$status" = PASS ]
