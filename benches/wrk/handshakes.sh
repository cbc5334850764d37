#!/usr/bin/env bash
# TLS handshakes per second: edgegate (one worker thread) against nginx (one worker) with the same
# P-256 certificate, TLS 1.3 (X25519), each proxying to the same origins. `openssl s_time` opens
# connection after connection for DURATION seconds, each with one `GET /` (so TLS 1.3 session
# tickets arrive): first full handshakes (-new), then resumed ones (-reuse). Prints handshakes per
# second (wall clock; the client shares the machine) and the server's CPU per handshake, which is
# the figure to compare. Rounds interleave the contenders; medians are printed.
#
# --baseline PATH measures a second edgegate build in the same rounds (row `baseline`).
#
#   benches/wrk/handshakes.sh [--duration 10] [--rounds 3] [--binary PATH] [--baseline PATH] [--tls 1.2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration=10 rounds=3 binary="" baseline="" version=1.3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    --tls) version="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "handshakes.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/install-deps.sh" bench
source "$here/lib.sh"
tls_bench_setup
case "$version" in
  1.3) s_time_version=-tls1_3 nginx_protocols=TLSv1.3 ;;
  1.2) s_time_version=-tls1_2 nginx_protocols=TLSv1.2 ;;
  *) echo "handshakes.sh: --tls 1.2 or 1.3" >&2; exit 2 ;;
esac
ticks_per_sec=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_nginx_tls() {
  local dir="$tmp/nginx-tls"
  rm -rf "$dir"; mkdir -p "$dir"
  write_nginx_conf "$dir" "  upstream origins { server 127.0.0.1:$origin1; server 127.0.0.1:$origin2; keepalive 64; }
  server { listen 127.0.0.1:$proxy ssl; ssl_certificate $tmp/tls.pem; ssl_certificate_key $tmp/tls.key;
    ssl_protocols $nginx_protocols; ssl_ecdh_curve X25519; ssl_session_cache shared:tls:10m;
    location / { proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" & pids+=($!)
  server_pid=$!
  wait_https
}

start_edgegate_tls() {
  edgegate_tls_config | sed "s|min_version: \"1.3\"|min_version: \"$version\"|" > "$tmp/edgegate.yaml"
  start_edgegate "${1:-$binary}" "$tmp/edgegate.yaml" https
  server_pid=$gateway_pid
}

wait_https() {
  for _ in $(seq 1 100); do
    curl -kfsS -o /dev/null "https://127.0.0.1:$proxy/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the TLS server did not come up" >&2; exit 1
}

# measure NAME KIND(-new|-reuse): one s_time run, recorded in $results.
results="$tmp/results"
: > "$results"
measure() {
  local name="$1" kind="$2" before after connections seconds
  before=$(cpu_ticks "$server_pid")
  openssl s_time -connect "127.0.0.1:$proxy" "$s_time_version" "$kind" -time "$duration" -www / \
    > "$tmp/s_time.out" 2>&1 || true
  after=$(cpu_ticks "$server_pid")
  read -r connections seconds < <(awk '/connections in [0-9]+ real seconds/ {print $1, $4}' "$tmp/s_time.out" | tail -1)
  if [ -z "${connections:-}" ] || [ "$connections" = 0 ]; then
    echo "s_time made no connection ($name $kind):" >&2; cat "$tmp/s_time.out" >&2; exit 1
  fi
  awk -v n="$name$kind" -v c="$connections" -v s="$seconds" -v t=$((after - before)) -v hz="$ticks_per_sec" \
    'BEGIN { printf "%s %.0f %.1f\n", n, c / s, t / hz * 1e6 / c }' >> "$results"
  echo "round $round: $name $kind $(tail -1 "$results" | cut -d' ' -f2-)" >&2
}

for round in $(seq 1 "$rounds"); do
  start_nginx_tls; measure nginx -new; measure nginx -reuse
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  start_edgegate_tls; measure edgegate -new; measure edgegate -reuse; stop_edgegate
  if [ -n "$baseline" ]; then
    start_edgegate_tls "$baseline"; measure baseline -new; measure baseline -reuse; stop_edgegate
  fi
done
contenders="nginx edgegate${baseline:+ baseline}"

median() {
  awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$results" | sort -g |
    awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
printf '%-18s %14s %18s %12s\n' contender "handshakes/s" "server us/hsk" "cpu÷nginx"
for kind in -new -reuse; do
  reference=$(median "nginx$kind" 3)
  for name in $contenders; do
    cpu=$(median "$name$kind" 3)
    printf '%-18s %14s %18s %12s\n' "$name ${kind#-}" "$(median "$name$kind" 2)" "$cpu" \
      "$(awk -v a="$cpu" -v b="$reference" 'BEGIN { printf "%.2f", a / b }')"
  done
done
echo "(TLS $version, P-256 certificate, X25519; openssl s_time ${duration}s per run, one GET / per connection;" \
  "medians of $rounds rounds; one worker each; new = full handshakes, reuse = resumed sessions)"
