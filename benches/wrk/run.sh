#!/usr/bin/env bash
# Load-test kit: builds release, starts two origins, nginx as the reference proxy (installed with
# apt when missing) and edgegate in each mode (one worker thread, upstream keepalive, access log
# off unless `full`), all on free loopback ports; drives each with wrk (benches/wrk/kit.lua), round
# after round with the contenders interleaved, and prints one table of medians: requests/s,
# p50/p99/p99.9 latency, CPU per request, peak RSS, errors, and CPU per request as a ratio to
# nginx's (to nginx with proxy_cache for the cache mode).
#
#   benches/wrk/run.sh                                  plain proxying + nginx, 10 s each, 64 connections
#   benches/wrk/run.sh --modes plain,jwt,ratelimit,cache,full --rounds 3
#        plain      one route, round robin over the two origins
#        jwt        HS256 JWT on every request (verified-token cache), `sub` forwarded
#        ratelimit  a sliding-window policy keyed by X-Client-Id (10,000 clients cycling)
#        cache      the route caches (every request a hit after the first)
#        full       jwt + ratelimit + a JSON access log to a file
#        https      plain proxying over TLS 1.3 (keep-alive; P-256 certificate, X25519), against
#                   nginx with `ssl` and the same certificate (nginx-https)
#        h2         plain proxying over HTTP/2 + TLS 1.3, driven by h2load (-m 10 streams per
#                   connection), against nginx with `http2` (nginx-h2)
#   benches/wrk/run.sh --paths 200                      cycle 200 distinct paths (strip_prefix route)
#   benches/wrk/run.sh --duration 30 --connections 256 --threads 2 --binary PATH --no-reference
#   benches/wrk/run.sh --origin demo                    origins: nginx (default when installed; fixed
#                                                       101-byte body) or demo (examples/demo_origin)
#   benches/wrk/run.sh --smoke                          2 s per contender against the debug build, one
#                                                       round; fails unless every one answered 200s
# Nothing is pinned: wrk, the origins and the proxy share the cores. Compare rows of one run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration=10 connections=64 wrk_threads=1 binary="" smoke=0 profile=release origin="" modes=plain
paths=0 clients=10000 reference=1 script="" rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --threads) wrk_threads="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --origin) origin="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --paths) paths="$2"; shift 2 ;;
    --script) script="$2"; shift 2 ;;
    --no-reference) reference=0; shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    --smoke) smoke=1; duration=2; connections=8; profile=debug; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

# The smoke run (the test suite) never runs nginx (below).
if [ "$reference" = 1 ] && [ "$smoke" = 0 ]; then
  "$root/scripts/install-deps.sh" bench
else
  "$root/scripts/install-deps.sh" test
fi
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
  for port in "$origin1" "$origin2"; do
    for _ in $(seq 1 100); do
      curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && continue 2
      sleep 0.1
    done
    echo "the demo origin on $port did not come up:" >&2; cat "$tmp"/origin*.log >&2; exit 1
  done
fi
# The smoke run checks edgegate alone, the same on every machine: nginx rows compare, they do
# not test, so they are never part of it (whether or not nginx is installed).
if [ "$smoke" = 1 ] && [ "$reference" = 1 ]; then
  reference=0
  echo "smoke: SKIPPED the nginx reference rows (a comparison, not a test; run without --smoke to compare)"
fi
command -v nginx >/dev/null 2>&1 || reference=0

# The TLS modes share one certificate with their nginx reference.
tls_certificate

secret="a-load-test-secret-that-is-long-enough-for-hs256"
printf '%s' "$secret" > "$tmp/jwt.secret"
token=$("$binary" token --alg HS256 --secret-file "$tmp/jwt.secret" --sub load-test --ttl 1d)

ticks_per_sec=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_wrk NAME PID TOKEN CLIENTS [SCHEME]: one wrk run against $proxy, recorded as one line of
# $results (name rps p50 p99 p99.9 cpu rss errors); PID is the server's.
results="$tmp/results"
: > "$results"
run_wrk() {
  local name="$1" pid="$2" jwt="$3" ids="$4" scheme="${5:-http}" before after
  local wrk_args=(-t"$wrk_threads" -c"$connections" -d"${duration}s" --latency -s "$here/${script:-kit.lua}")
  before=$(cpu_ticks "$pid")
  WRK_TOKEN="$jwt" WRK_PATHS="$paths" WRK_CLIENTS="$ids" \
    wrk "${wrk_args[@]}" "$scheme://127.0.0.1:$proxy/" > "$tmp/wrk.out"
  after=$(cpu_ticks "$pid")
  local requests rps errors rss_kib cpu p50 p99 p999
  requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$tmp/wrk.out")
  errors=$(wrk_errors "$tmp/wrk.out")
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  cpu=$(awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v r="$requests" 'BEGIN { if (r > 0) printf "%.1f", t / hz * 1e6 / r; else print "nan" }')
  read -r p50 p99 p999 < <(awk '/^kit-latency-us/ { for (i = 2; i <= 4; i++) { split($i, kv, "="); printf "%.2f ", kv[2] / 1000 } }' "$tmp/wrk.out"; echo)
  record "$name" "$requests" "${rps:-0}" "${p50:-nan}" "${p99:-nan}" "${p999:-nan}" "$cpu" "$rss_kib" "$errors"
}

# record NAME REQUESTS RPS P50 P99 P999 CPU RSS_KIB ERRORS: one result line (and the smoke checks).
record() {
  local name="$1" requests="$2" rps="$3" cpu="$7" errors="$9"
  echo "$name $rps $4 $5 $6 $cpu $(($8 / 1024)) $errors" >> "$results"
  echo "round $round: $name $rps req/s, $cpu us/req, $errors errors" >&2
  if [ "$smoke" = 1 ]; then
    [ "${requests:-0}" -gt 0 ] || { echo "smoke: wrk completed no request ($name)" >&2; exit 1; }
    if [ "$errors" != 0 ]; then
      echo "smoke: $errors errors ($name)" >&2; cat "$tmp/wrk.out" >&2
      # The answers that were not 200 (the full mode logs them; status 0 is wrk hanging up at the end).
      sleep 0.5  # the access log is flushed every 200 ms
      [ -f "$tmp/access.log" ] && grep -v -e '"status":200' -e '"status":0,' "$tmp/access.log" | head -5 >&2
      [ -f "$tmp/edgegate.log" ] && tail -5 "$tmp/edgegate.log" >&2
      for log in "$tmp"/origin*.log; do [ -f "$log" ] && tail -3 "$log" >&2; done
      exit 1
    fi
  fi
}

# run_h2load NAME PID: one h2load run (HTTP/2 over TLS, 10 streams per connection) against
# $proxy, recorded like run_wrk's (h2load reports no latency percentiles).
run_h2load() {
  local name="$1" pid="$2" before after requests rps errors rss_kib cpu
  before=$(cpu_ticks "$pid")
  h2load -c "$connections" -t "$wrk_threads" -m 10 -D "$duration" "https://127.0.0.1:$proxy/" > "$tmp/h2load.out" 2>&1
  after=$(cpu_ticks "$pid")
  requests=$(awk '/^requests:/ {print $8}' "$tmp/h2load.out")
  rps=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$tmp/h2load.out")
  errors=$(awk '/^requests:/ {print $10 + $12} /^status codes:/ {print $5 + $7 + $9}' "$tmp/h2load.out" | awk '{n += $1} END {print n + 0}')
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  cpu=$(awk -v t=$((after - before)) -v hz="$ticks_per_sec" -v r="${requests:-0}" 'BEGIN { if (r > 0) printf "%.1f", t / hz * 1e6 / r; else print "nan" }')
  [ "$smoke" = 1 ] && [ "${requests:-0}" -eq 0 ] && { cat "$tmp/h2load.out" >&2; }
  record "$name" "${requests:-0}" "${rps:-0}" nan nan nan "$cpu" "$rss_kib" "$errors"
}

# edgegate_config MODE: the YAML for one mode.
edgegate_config() {
  local route_extra="" sections="" log_line="access_log: { format: off }"
  case "$1" in
    plain) ;;
    cache) route_extra=", cache: { ttl: 1h }" ;;
    jwt | ratelimit | full)
      if [ "$1" != ratelimit ]; then
        sections+="auth:
  jwt:
    providers:
      main: { algorithms: [HS256], secret_file: $tmp/jwt.secret, forward_claims: { sub: X-User-ID } }
"
        route_extra+=", auth: { jwt: main }"
      fi
      if [ "$1" != jwt ]; then
        sections+="rate_limits:
  policies:
    per_client: { algorithm: sliding_window, key: header:X-Client-Id, limit: 1000000000, window: 1m }
"
        route_extra+=", rate_limits: [per_client]"
      fi
      [ "$1" = full ] && log_line="access_log: { format: json, path: $tmp/access.log }"
      ;;
    https | h2) ;;
    *) echo "run.sh: unknown mode $1 (plain, jwt, ratelimit, cache, full, https, h2)" >&2; exit 2 ;;
  esac
  local listener="  - { name: http, address: \"127.0.0.1:$proxy\" }"
  case "$1" in https | h2) listener=$(tls_listener_line) ;; esac
  config_preamble | sed -e "s|^access_log: .*|$log_line|" -e "s|^  - { name: http, address: .*|$listener|"
  printf '%s' "$sections"
  two_origin_pool "$origin1" "$origin2"
  cat <<YAML
routes:
  - { name: api, match: { path_prefix: /api/v1 }, strip_prefix: /api/v1, upstream: origins$route_extra }
  - { name: default, upstream: origins$route_extra }
YAML
}

# nginx_proxy [cache|https|h2]: nginx proxying to the origins the way the gateway does (one
# worker, upstream keepalive, access log off), on $proxy; with TLS 1.3 and the gateway's
# certificate for https and h2.
start_nginx_proxy() {
  local dir="$tmp/nginx-proxy" cache_conf="" cache_location="" listen="listen 127.0.0.1:$proxy;" scheme=http
  rm -rf "$dir"; mkdir -p "$dir"
  case "${1:-}" in
    cache)
      cache_conf="proxy_cache_path $dir/cache keys_zone=edge:10m;"
      cache_location="proxy_cache edge; proxy_cache_valid 200 1h;" ;;
    https | h2)
      scheme=https
      local http2=""
      if [ "$1" = h2 ]; then http2=" http2"; fi
      listen="listen 127.0.0.1:$proxy ssl$http2; ssl_certificate $tmp/tls.pem;
    ssl_certificate_key $tmp/tls.key; ssl_protocols TLSv1.3; ssl_ecdh_curve X25519;
    ssl_session_cache shared:tls:10m; http2_max_concurrent_streams 128;" ;;
  esac
  write_nginx_conf "$dir" "  $cache_conf
  upstream origins { server 127.0.0.1:$origin1; server 127.0.0.1:$origin2; keepalive 64; }
  server { $listen location / {
    proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection \"\"; $cache_location } }"
  nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" & pids+=($!)
  nginx_pid=$!
  for _ in $(seq 1 100); do
    curl -kfsS "$scheme://127.0.0.1:$proxy/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nginx did not come up:" >&2; cat "$dir/error.log" >&2; exit 1
}
stop_nginx_proxy() { kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; }

IFS=, read -r -a mode_list <<< "$modes"
contenders=()
[ "$reference" = 1 ] && contenders+=(nginx)
for mode in "${mode_list[@]}"; do
  edgegate_config "$mode" > /dev/null  # an unknown mode fails before anything runs
  contenders+=("$mode")
  case "$mode" in cache | https | h2) [ "$reference" = 1 ] && contenders+=("nginx-$mode") ;; esac
done
case ",$modes," in *,h2,*) command -v h2load >/dev/null || { echo "run.sh: the h2 mode needs h2load (nghttp2-client)" >&2; exit 2; } ;; esac

for round in $(seq 1 "$rounds"); do
  for contender in "${contenders[@]}"; do
    case "$contender" in
      nginx) start_nginx_proxy; run_wrk nginx "$nginx_pid" "" 0; stop_nginx_proxy ;;
      nginx-cache) start_nginx_proxy cache; run_wrk nginx-cache "$nginx_pid" "" 0; stop_nginx_proxy ;;
      nginx-https) start_nginx_proxy https; run_wrk nginx-https "$nginx_pid" "" 0 https; stop_nginx_proxy ;;
      nginx-h2) start_nginx_proxy h2; run_h2load nginx-h2 "$nginx_pid"; stop_nginx_proxy ;;
      *)
        edgegate_config "$contender" > "$tmp/edgegate.yaml"
        scheme=http
        case "$contender" in https | h2) scheme=https ;; esac
        start_edgegate "$binary" "$tmp/edgegate.yaml" "$scheme"
        jwt="" ids=0
        case "$contender" in jwt | full) jwt="$token" ;; esac
        case "$contender" in ratelimit | full) ids="$clients" ;; esac
        if [ "$contender" = h2 ]; then
          run_h2load h2 "$gateway_pid"
        else
          run_wrk "$contender" "$gateway_pid" "$jwt" "$ids" "$scheme"
        fi
        stop_edgegate
        ;;
    esac
  done
done

# median NAME COLUMN: the median of one column over the contender's rounds.
median() {
  awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$results" | sort -g |
    awk '{v[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
nginx_cpu=$(median nginx 6)
printf '%-12s %11s %9s %9s %9s %11s %8s %7s %11s\n' contender "requests/s" "p50 ms" "p99 ms" "p99.9 ms" \
  "cpu us/req" "RSS MiB" errors "cpu÷nginx"
for contender in "${contenders[@]}"; do
  reference_cpu=$nginx_cpu
  case "$contender" in
    cache | https | h2) reference_cpu=$(median "nginx-$contender" 6) ;;
    nginx-*) reference_cpu=$(median "$contender" 6) ;;
  esac
  awk -v n="$contender" -v rps="$(median "$contender" 2)" -v p50="$(median "$contender" 3)" \
    -v p99="$(median "$contender" 4)" -v p999="$(median "$contender" 5)" -v cpu="$(median "$contender" 6)" \
    -v ref="$reference_cpu" '
    $1 == n { if ($7 > rss) rss = $7; errors += $8 }
    END {
      ratio = (ref != "nan" && ref > 0 && cpu != "nan") ? sprintf("%.2f", cpu / ref) : "-"
      printf "%-12s %11.0f %9s %9s %9s %11s %8d %7d %11s\n", n, rps, p50, p99, p999, cpu, rss, errors, ratio
    }' "$results"
done
echo "($profile build; medians of $rounds round(s), contenders interleaved; wrk -t$wrk_threads -c$connections" \
  "-d${duration}s -s ${script:-kit.lua}, $paths paths; one worker thread/process each, access log off" \
  "unless full; origins: 2 x $origin; nothing pinned; cpu÷nginx: the cache, https and h2 modes" \
  "against nginx-cache, nginx-https and nginx-h2; h2 rows: h2load -m 10, no latency percentiles)"
[ "$smoke" = 1 ] && echo "smoke: ok"
exit 0
