#!/usr/bin/env bash
# Builds edgegate (release) and runs it with conf/edgegate.yaml in front of two demo origins
# on 127.0.0.1:9001 and :9002. Then, from another shell:
#   curl -i http://127.0.0.1:8080/api/v1/hello      curl http://127.0.0.1:9901/status
# `scripts/demo.sh tls` runs conf/edgegate-tls.yaml instead (HTTPS + HTTP/2 on :8443, with a
# throwaway certificate from scripts/demo-cert.sh):
#   curl --cacert target/demo-tls/ca.pem https://localhost:8443/api/v1/hello
set -euo pipefail
cd "$(dirname "$0")/.."
config=conf/edgegate.yaml
if [ "${1:-}" = tls ]; then
  config=conf/edgegate-tls.yaml
  scripts/install-deps.sh test   # openssl, curl
  scripts/demo-cert.sh
fi
scripts/install-deps.sh build
cargo build --release --bin edgegate --example demo_origin
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
target/release/examples/demo_origin 127.0.0.1:9001 origin-1 & pids+=($!)
target/release/examples/demo_origin 127.0.0.1:9002 origin-2 & pids+=($!)
target/release/edgegate check -c "$config"
target/release/edgegate run -c "$config" & pids+=($!)
wait "${pids[-1]}"
