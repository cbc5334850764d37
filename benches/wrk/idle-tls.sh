#!/usr/bin/env bash
# Memory per idle keep-alive TLS client: edgegate (one worker thread) against nginx (one worker)
# with the same P-256 certificate and TLS 1.3. A Python client (benches/wrk/idle_tls.py) opens N
# TLS connections, sends one request on each, leaves them idle, and reads the server's RSS; then a
# second request on every connection checks that none was dropped.
#
#   benches/wrk/idle-tls.sh [--conns 10000] [--settle 5] [--binary PATH]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
conns=10000 settle=5 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) conns="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "idle-tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/install-deps.sh" bench
# Each connection holds a descriptor in the client and one in the server (plus one upstream).
ulimit -n "$(ulimit -Hn)"
source "$here/lib.sh"
tls_bench_setup

measure() {
  python3 "$here/idle_tls.py" --port "$proxy" --pid "$1" --conns "$conns" --settle "$settle" --name "$2"
}

dir="$tmp/nginx-tls"; mkdir -p "$dir"
write_nginx_conf "$dir" "  upstream origins { server 127.0.0.1:$origin1; server 127.0.0.1:$origin2; keepalive 64; }
  server { listen 127.0.0.1:$proxy ssl; ssl_certificate $tmp/tls.pem; ssl_certificate_key $tmp/tls.key;
    ssl_protocols TLSv1.3; ssl_ecdh_curve X25519; keepalive_timeout 300s;
    location / { proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
sed -i "s/worker_connections 4096/worker_connections $((conns * 2 + 100))/" "$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" & pids+=($!)
nginx_pid=$!
sleep 0.5
measure "$nginx_pid" nginx
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true

edgegate_tls_config "keepalive_timeout: 300s" > "$tmp/edgegate.yaml"
start_edgegate "$binary" "$tmp/edgegate.yaml" https
measure "$gateway_pid" edgegate
stop_edgegate
echo "(TLS 1.3, P-256, X25519; $conns idle keep-alive clients after one request each; RSS of the server process; one worker each)"
