# Shared helpers of the wrk scripts (sourced, not run). Everything started is tracked by PID
# in $pids and stopped by `cleanup`; only loopback addresses are used.

tmp="$(mktemp -d /tmp/edgegate-wrk.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below Linux's ephemeral range (32768-60999), so no client socket of an earlier run holds one.
next_port=$(( 20000 + RANDOM % 10000 ))
# Sets $port to a free loopback port (no subshell, so $next_port advances).
take_port() {
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  port=$next_port; next_port=$((next_port + 1))
}

# write_nginx_conf DIR HTTP_BODY: a single-process nginx config in DIR (temp paths, pid and logs
# kept there, access log off) whose http block ends with HTTP_BODY.
write_nginx_conf() {
  cat > "$1/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1; pid $1/nginx.pid; error_log $1/error.log;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; client_body_temp_path $1;
  proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
$2
}
NGINX
}

# start_nginx_origin NAME PORT: one single-process nginx answering a fixed ~100-byte JSON body.
start_nginx_origin() {
  local name="$1" listen="$2" dir="$tmp/nginx-$1"
  mkdir -p "$dir"
  write_nginx_conf "$dir" "  server { listen 127.0.0.1:$listen; location / { default_type application/json; add_header X-Origin $name;
    return 200 '{\"origin\":\"$name\",\"message\":\"hello from the benchmark origin\",\"padding\":\"xxxxxxxxxxxxxxxx\"}'; } }"
  nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/stderr.log" & pids+=($!)
  origin_pid=$!
}

# start_edgegate BINARY CONFIG [SCHEME]: starts the gateway, waits until the proxy answers on
# $proxy (over http, or https without verifying the test certificate).
start_edgegate() {
  local scheme="${3:-http}"
  RUST_LOG=warn "$1" run -c "$2" 2>"$tmp/edgegate.log" & pids+=($!)
  gateway_pid=$!
  for _ in $(seq 1 100); do
    kill -0 "$gateway_pid" 2>/dev/null || { echo "edgegate exited:" >&2; cat "$tmp/edgegate.log" >&2; exit 1; }
    curl -ksS -o /dev/null "$scheme://127.0.0.1:$proxy/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "edgegate did not come up:" >&2; cat "$tmp/edgegate.log" >&2; exit 1
}

# stop_edgegate: stops the gateway start_edgegate started and waits for it to exit.
stop_edgegate() {
  kill "$gateway_pid" 2>/dev/null || true
  wait "$gateway_pid" 2>/dev/null || true
}

# wrk_errors FILE: non-2xx/3xx responses plus socket errors in a wrk report.
wrk_errors() {
  awk '/Non-2xx/ {n += $NF} /Socket errors/ {for (i = 4; i <= NF; i += 2) n += $i} END {print n + 0}' "$1" | tr -d ','
}

# release_binary: sets $binary to the release build unless the caller chose one (--binary).
release_binary() {
  if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --bin edgegate)
    binary="$root/target/release/edgegate"
  fi
}

# two_origin_pool ORIGIN1 ORIGIN2: the `upstreams:` section of a round-robin pool named origins.
two_origin_pool() {
  cat <<YAML
upstreams:
  origins:
    selection: round_robin
    targets:
      - { address: "127.0.0.1:$1" }
      - { address: "127.0.0.1:$2" }
YAML
}

# config_preamble: the server/listener/admin/access-log part of a load-test config
# (one worker thread, access log off) for $proxy and $admin.
config_preamble() {
  cat <<YAML
server:
  threads: 1
  pid_file: $tmp/edgegate.pid
  upgrade_sock: $tmp/upgrade.sock
  grace_period: ${grace_period:-0s}
  shutdown_timeout: 1s
listeners:
  - { name: http, address: "127.0.0.1:$proxy" }
admin: { address: "127.0.0.1:$admin" }
access_log: { format: off }
YAML
}

# tls_certificate: a throwaway P-256 certificate for localhost in $tmp/tls.pem and $tmp/tls.key.
tls_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$tmp/tls.key" -out "$tmp/tls.pem" 2>/dev/null
}

# tls_listener_line: the `listeners:` entry of a TLS listener on $proxy with that certificate.
tls_listener_line() {
  echo "  - { name: https, address: \"127.0.0.1:$proxy\", tls: { certificates: [{ cert: $tmp/tls.pem, key: $tmp/tls.key }], min_version: \"1.3\" } }"
}

# tls_bench_setup: what the TLS benches share: free ports ($origin1 $origin2 $proxy $admin), the
# two nginx origins, the certificate, and the edgegate binary.
tls_bench_setup() {
  release_binary
  take_port; origin1=$port; take_port; origin2=$port; take_port; proxy=$port; take_port; admin=$port
  start_nginx_origin origin-1 "$origin1"
  start_nginx_origin origin-2 "$origin2"
  tls_certificate
}

# edgegate_tls_config [SERVER_LINE]: a one-route config serving the origins on the TLS listener.
edgegate_tls_config() {
  config_preamble | sed -e "s|^  - { name: http, address: .*|$(tls_listener_line)|" \
    -e "s|^  shutdown_timeout: 1s|  shutdown_timeout: 1s${1:+\\n  $1}|"
  two_origin_pool "$origin1" "$origin2"
  echo "routes: [{ name: all, upstream: origins }]"
}
