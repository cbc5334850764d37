#!/usr/bin/env bash
# Failover load test: edgegate in front of three nginx origins (health checks, outlier detection,
# retries on connect failures, gateway errors and resets); wrk drives it, and one origin is
# killed mid-run. Prints how many client requests failed, and what the gateway did about it.
#
#   benches/wrk/failover.sh                      release build, 12 s run, origin killed after 4 s
#   benches/wrk/failover.sh --duration 30 --kill-after 10 --connections 128 --binary PATH
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
duration=12 kill_after=4 connections=64 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --kill-after) kill_after="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "failover.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

"$root/scripts/install-deps.sh" bench
cd "$root"
source "$here/lib.sh"
release_binary

origin_ports=() origin_pids=()
for i in 1 2 3; do
  take_port; origin_ports+=("$port")
  start_nginx_origin "origin-$i" "$port"; origin_pids+=("$origin_pid")
done
take_port; proxy=$port; take_port; admin=$port
{ config_preamble; cat <<YAML
upstreams:
  origins:
    selection: round_robin
    connect_timeout: 250ms
    read_timeout: 2s
    targets:
      - { address: "127.0.0.1:${origin_ports[0]}" }
      - { address: "127.0.0.1:${origin_ports[1]}" }
      - { address: "127.0.0.1:${origin_ports[2]}" }
    health_check: { type: http, path: /, interval: 1s, timeout: 250ms, healthy_threshold: 2, unhealthy_threshold: 2 }
    outlier_detection: { consecutive_gateway_failures: 3, base_ejection_time: 10s }
routes:
  - name: all
    upstream: origins
    retries: { attempts: 2, on: [connect_failure, gateway_error, reset] }
YAML
} > "$tmp/edgegate.yaml"
start_edgegate "$binary" "$tmp/edgegate.yaml"

wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$proxy/" > "$tmp/wrk.out" &
wrk_pid=$!
sleep "$kill_after"
kill "${origin_pids[1]}"
echo "killed origin-2 (127.0.0.1:${origin_ports[1]}) after ${kill_after}s" >&2
wait "$wrk_pid"

requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
failed=$(wrk_errors "$tmp/wrk.out")
metrics="$(curl -fsS "http://127.0.0.1:$admin/metrics")"
sum() { awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { print s + 0 }' <<<"$metrics"; }
printf '%-10s %10s %8s %10s %10s %10s %10s\n' requests failed "p99" retries ejections "req/s" "origin-2 unhealthy"
printf '%-10s %10s %8s %10s %10s %10s %10s\n' "$requests" "$failed" "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")" \
  "$(sum edgegate_retries_total)" "$(sum edgegate_ejections_total)" "$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out")" \
  "$(grep -q "edgegate_backend_healthy{backend=\"127.0.0.1:${origin_ports[1]}\",upstream=\"origins\"} 0" <<<"$metrics" && echo yes || echo no)"
echo "(wrk -t1 -c$connections -d${duration}s; one of three nginx origins killed after ${kill_after}s)"
