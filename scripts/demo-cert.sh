#!/usr/bin/env bash
# Makes a throwaway CA and a certificate for localhost / 127.0.0.1 in target/demo-tls/ for
# conf/edgegate-tls.yaml (again when the certificate has less than 14 days left). Demo use only.
#   curl --cacert target/demo-tls/ca.pem https://localhost:8443/anything
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/demo-tls
if [ -f "$dir/localhost.pem" ] && openssl x509 -checkend $((14 * 86400)) -noout -in "$dir/localhost.pem" >/dev/null; then
  exit 0
fi
mkdir -p "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=edgegate demo CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$dir/localhost.key" -out "$dir/localhost.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$dir/localhost.ext"
openssl x509 -req -in "$dir/localhost.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 90 -extfile "$dir/localhost.ext" -out "$dir/localhost.pem" 2>/dev/null
echo "demo-cert: $dir/localhost.pem (CA: $dir/ca.pem)" >&2
