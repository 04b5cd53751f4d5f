#!/bin/sh
# Makes the files of the three Secrets that the secured examples use:
#
#   OUT/ca.crt, OUT/ca.key      a private CA (keep ca.key off the cluster)
#   OUT/linkgate-web/           for linkgate itself (--web.config.file):
#     web.yml                     TLS and basic auth, bcrypt hashes only
#     tls.crt, tls.key            server certificate, signed by the CA
#   OUT/linkgate-scrape/        for Prometheus (ServiceMonitor, PodMonitor):
#     ca.crt, username, password  user "prometheus"
#   OUT/linkgate-wait/          for the migration container's `linkgate wait`:
#     ca.crt, password            user "migrate"
#
# Usage: make-secrets.sh OUT [DNS_NAME...]
#
# The certificate is valid for localhost, 127.0.0.1 and ::1 (`linkgate wait`
# next to linkgate), for "linkgate" (the serverName the ServiceMonitor and
# PodMonitor verify) and for any DNS_NAME given. Passwords are random and
# written without a trailing newline; web.yml holds only their hashes.
# Needs openssl and htpasswd (Debian: apache2-utils). Then, in each namespace
# that runs linkgate:
#
#   kubectl create secret generic linkgate-web --from-file=OUT/linkgate-web
#   kubectl create secret generic linkgate-scrape --from-file=OUT/linkgate-scrape
#   kubectl create secret generic linkgate-wait --from-file=OUT/linkgate-wait  # migration namespaces
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 OUT [DNS_NAME...]" >&2
	exit 2
fi
out=$1
shift
for tool in openssl htpasswd; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "$0: $tool is needed (Debian: apt-get install openssl apache2-utils)" >&2
		exit 1
	fi
done
if [ -e "$out/ca.key" ]; then
	echo "$0: $out/ca.key exists; not overwriting it" >&2
	exit 1
fi

days=${LINKGATE_CERT_DAYS:-365}
san="DNS:localhost,DNS:linkgate,IP:127.0.0.1,IP:::1"
for name in "$@"; do
	san="$san,DNS:$name"
done

umask 077
mkdir -p "$out/linkgate-web" "$out/linkgate-scrape" "$out/linkgate-wait"

# CA and server certificate (ECDSA P-256).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$out/ca.key" -out "$out/ca.crt" -days "$days" \
	-subj "/CN=linkgate CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$out/linkgate-web/tls.key" -out "$out/server.csr" \
	-subj "/CN=linkgate" 2>/dev/null
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
	-CAcreateserial -out "$out/linkgate-web/tls.crt" -days "$days" \
	-extfile /dev/stdin 2>/dev/null <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EOF
rm -f "$out/server.csr" "$out/ca.srl"
cp "$out/ca.crt" "$out/linkgate-scrape/ca.crt"
cp "$out/ca.crt" "$out/linkgate-wait/ca.crt"

# Passwords and their bcrypt hashes (the password goes to htpasswd on
# standard input, never on a command line).
password() { openssl rand -hex 24 | tr -d '\n'; }
hash() { printf '%s' "$2" | htpasswd -niBC 10 "$1" | tr -d '\n' | sed "s/^$1://"; }

scrape_pw=$(password)
wait_pw=$(password)
printf '%s' prometheus >"$out/linkgate-scrape/username"
printf '%s' "$scrape_pw" >"$out/linkgate-scrape/password"
printf '%s' "$wait_pw" >"$out/linkgate-wait/password"

cat >"$out/linkgate-web/web.yml" <<EOF
# linkgate --web.config.file (exporter-toolkit format). File names are
# relative to this file, so it works wherever the Secret is mounted.
tls_server_config:
  cert_file: tls.crt
  key_file: tls.key
  min_version: TLS12
basic_auth_users:
  prometheus: '$(hash prometheus "$scrape_pw")'
  migrate: '$(hash migrate "$wait_pw")'
EOF

echo "wrote $out: ca.crt, ca.key, linkgate-web/, linkgate-scrape/, linkgate-wait/" >&2
