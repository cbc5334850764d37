#!/usr/bin/env bash
# Installs what building and testing edgegate needs on Debian/Ubuntu, only when missing.
#   scripts/install-deps.sh build        cmake, perl, make, a C compiler, pkg-config, OpenSSL headers (Pingora's build)
#   scripts/install-deps.sh test         build + redis-server, wrk, curl, openssl, h2load, systemd-analyze, chromium (test suite, load tests)
#   scripts/install-deps.sh bench        test + nginx (the reference proxy in load tests)
#   scripts/install-deps.sh soak         test + gnuplot (benches/wrk/soak.sh draws its chart)
set -euo pipefail
level="${1:-build}"

need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want cmake cmake
want perl perl
want make make
want cc gcc
want g++ g++
want pkg-config pkg-config
# openssl-sys finds OpenSSL through pkg-config; the headers come with libssl-dev.
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
if [ "$level" = test ] || [ "$level" = bench ] || [ "$level" = soak ]; then
  want redis-server redis-server
  want redis-cli redis-tools   # the Cluster tests create the cluster with redis-cli --cluster
  want faketime faketime   # the quota tests inject the gateway's wall clock (libfaketime)
  want wrk wrk
  want curl curl
  want openssl openssl   # the TLS tests use `openssl s_client` as an independent client
  want h2load nghttp2-client   # the load-test kit's h2 mode
  want systemd-analyze systemd   # the test that verifies systemd/edgegate.service
  want chromium chromium   # the CORS test drives a real browser (headless, DevTools protocol)
fi
if [ "$level" = bench ]; then
  want nginx nginx
fi
if [ "$level" = soak ]; then
  want gnuplot gnuplot-nox
fi
[ "${#need[@]}" -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -qq "${need[@]}" >/dev/null; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
