#!/bin/sh
# A throwaway CA and the two workloads' certificates for the examples, with
# Istio's SPIFFE identities as URI SANs (the exchange checks a peer's claims
# against them):
#   outbound.crt/.key  spiffe://cluster.local/ns/shop/sa/frontend
#   inbound.crt/.key   spiffe://cluster.local/ns/shop/sa/backend
#
#   examples/make-certs.sh [dir]      (default: examples/certs)
#
# Needs openssl. In a real mesh these come from your CA (Istio: istiod).
set -eu
dir=${1:-$(dirname "$0")/certs}
command -v openssl >/dev/null 2>&1 || { echo "make-certs.sh: openssl is needed" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.crt -days 30 -subj "/O=example mesh/CN=example mesh CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

leaf() { # <file name> <SPIFFE id>
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "/O=example mesh" 2>/dev/null
    printf 'subjectAltName=critical,URI:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
        "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
leaf outbound spiffe://cluster.local/ns/shop/sa/frontend
leaf inbound spiffe://cluster.local/ns/shop/sa/backend
rm -f ca.srl
echo "certificates for the examples written to $dir"
