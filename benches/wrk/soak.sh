#!/usr/bin/env bash
# Soak: the full gateway under wrk for a long time, with a backend that flaps and reloads, to show
# that memory, descriptors and latency stay flat and nothing fails that should not.
#
# Gateway: JWT (HS256) on every request, two rate-limit policies (one per client id that never
# refuses, one on /limited/ that refuses on purpose), a response cache, a JSON access log to a file,
# retries, health checks, three backends. Every minute the third backend stops for 30 s (killed,
# then started again on its port); every 5 minutes the configuration is reloaded (SIGHUP). wrk runs
# in 10 s slices; after each, the gateway's RSS, open descriptors and the slice's p99 go into a CSV.
# At the end, benches/wrk/soak-report.sh draws a PNG chart of the three (gnuplot) and prints the
# verdict (exit status 0 only when it is PASS): RSS growth over the last 20 minutes <= 5 %,
# descriptors without a trend, no non-2xx answer other than the planned 429s, no socket error,
# every reload applied.
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
"$here/soak-report.sh" "$csv" "$out" "$minutes" "$connections" "${reloads:-0}"
