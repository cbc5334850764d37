#!/usr/bin/env bash
# compare.sh -- the gateway's CPU per request beside nginx and vanilla Pingora, in ONE run.
#
# Usage (from the project root):
#   benches/compare/compare.sh 'edgegate=target/release/edgegate run -c benches/proxybench.yaml@19091' [proxybench options]
#
# Builds the reference contender (Pingora 0.9 load-balancer example, one thread, keepalive, LTO) into
# $VANILLA_TARGET (default /tmp/vanilla-pingora-target) once, then runs proxybench.sh with nginx,
# vanilla Pingora on port 19090 and every contender you pass. Your contender's config must read the
# listen address and origins from the harness (see benches/compare/README.md: PROXYBENCH_LISTEN, PROXYBENCH_ORIGINS),
# run ONE worker thread, keep upstream connections alive and log nothing per request.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VT="${VANILLA_TARGET:-/tmp/vanilla-pingora-target}"
if [ ! -x "$VT/release/vanilla-pingora" ]; then
  command -v cmake >/dev/null || { echo "compare.sh: Pingora needs cmake (apt-get install -y cmake)" >&2; exit 1; }
  echo "compare.sh: building vanilla Pingora into $VT (once, a few minutes)" >&2
  CARGO_TARGET_DIR="$VT" cargo build --release --quiet --manifest-path "$HERE/vanilla-pingora/Cargo.toml"
fi
exec "$HERE/proxybench.sh" --contenders nginx "vanilla=$VT/release/vanilla-pingora@19090" "$@"
