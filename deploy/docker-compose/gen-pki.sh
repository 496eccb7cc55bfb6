#!/bin/sh
# Creates the files docker-compose.yml mounts but Warden cannot issue itself, in the current directory:
#   ca/etcd/, ca/db/   the two CAs (keys stay here: no container mounts this directory)
#   etcd-pki/etcd/     etcd's CA certificate, server certificate (SANs etcd, localhost, 127.0.0.1) and key
#   etcd-pki/wardend/  the same CA certificate and wardend's etcd client certificate and key
#   db-pki/            the database server certificate (SAN db), its key, and ca.crt (see README: Warden's
#                      trust bundle is appended once wardend has started)
#   secrets/seal.key   wardend's key-encryption key ("id:base64", 32 random bytes)
# etcd has its own CA because wardend needs etcd before it has a CA of its own. Existing files are kept,
# so running it again never replaces a key that is in use.
# Usage: ./gen-pki.sh [output-dir]   (needs openssl >= 1.1.1)
set -eu
umask 077
out=${1:-.}
days=825

mkdir -p "$out/ca/etcd" "$out/ca/db" "$out/etcd-pki/etcd" "$out/etcd-pki/wardend" "$out/db-pki" "$out/secrets"
cd "$out"
# Mounted directories must be traversable by the containers' users; the keys inside stay 0600.
chmod 755 etcd-pki etcd-pki/etcd etcd-pki/wardend db-pki secrets

# ca NAME DIR: a self-signed P-256 CA.
ca() {
	[ -f "$2/ca.key" ] && return 0
	openssl ecparam -name prime256v1 -genkey -noout -out "$2/ca.key"
	openssl req -new -x509 -key "$2/ca.key" -out "$2/ca.crt" -days 3650 -subj "/CN=$1" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# leaf CA_DIR OUT_PREFIX CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
leaf() {
	[ -f "$2.key" ] && return 0
	openssl ecparam -name prime256v1 -genkey -noout -out "$2.key"
	openssl req -new -key "$2.key" -out "$2.csr" -subj "/CN=$3"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$4"
		if [ -n "${5:-}" ]; then echo "subjectAltName=$5"; fi
	} >"$2.ext"
	openssl x509 -req -in "$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days "$days" \
		-extfile "$2.ext" -out "$2.crt"
	rm -f "$2.csr" "$2.ext"
}

ca "warden-etcd-ca" ca/etcd
leaf ca/etcd etcd-pki/etcd/server etcd serverAuth,clientAuth "DNS:etcd,DNS:localhost,IP:127.0.0.1"
leaf ca/etcd etcd-pki/wardend/wardend-client wardend clientAuth
cp ca/etcd/ca.crt etcd-pki/etcd/ca.crt
cp ca/etcd/ca.crt etcd-pki/wardend/ca.crt

ca "warden-db-server-ca" ca/db
leaf ca/db db-pki/server db serverAuth "DNS:db"
[ -f db-pki/ca.crt ] || cp ca/db/ca.crt db-pki/ca.crt

if [ ! -f secrets/seal.key ]; then
	printf 'k1:%s\n' "$(openssl rand -base64 32)" >secrets/seal.key
fi
chmod 600 secrets/seal.key ca/*/ca.key etcd-pki/*/*.key db-pki/*.key
chmod 644 ca/*/ca.crt etcd-pki/*/*.crt db-pki/*.crt

echo "done. The containers run as other users; give them their files (see deploy/README.md):"
echo "  sudo chown 65532:65532 secrets/seal.key etcd-pki/wardend/wardend-client.key"
echo "  sudo chown 999:999 db-pki/server.key"
