#!/usr/bin/env bash
# Sourced by scripts/redis/start.sh and scripts/sql/start.sh: make_test_ca DIR NAME generates, in DIR,
# a test CA (ca.crt/ca.key, CN NAME), a server certificate for localhost/127.0.0.1 signed by it
# (server.crt/server.key, with the SAN rustls requires), and a second, unrelated CA
# (other-ca.crt/other-ca.key) for the "wrong CA" tests, which must get a certificate error from it.
make_test_ca() {
  local dir=$1 name=$2
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$name" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n" > "$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=unrelated-$name" \
    -keyout "$dir/other-ca.key" -out "$dir/other-ca.crt" 2>/dev/null
}
