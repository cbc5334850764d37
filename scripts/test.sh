#!/usr/bin/env bash
# The full test suite, exactly what CI runs (.ci/run): formatting, lints, the shipped configs
# (the TLS example with a demo certificate), unit + black-box tests, every criterion bench once
# in test mode, and a short wrk smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --bin edgegate --example demo_origin
target/debug/edgegate check -c conf/edgegate.yaml
scripts/demo-cert.sh
target/debug/edgegate check -c conf/edgegate-tls.yaml
cargo test --all-targets
benches/wrk/run.sh --smoke --modes plain,jwt,ratelimit,cache,full,https,h2 --paths 50
