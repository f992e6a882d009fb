#!/usr/bin/env bash
# TLS on the hop from API Management to the KEDA HTTP add-on interceptor: the
# environment's own private CA and the interceptor's certificate, issued and
# renewed here (infra/deploy.sh runs both steps at every deploy).
#   infra/interceptor_tls.sh ca <dir>                        # before Bicep
#   infra/interceptor_tls.sh cert <dir> <ip address> <name>  # after it
# <dir> holds what the last deploy installed, read back from the cluster's
# Secrets (nothing on a first deploy), and receives what this deploy installs:
# - ca.crt, ca.key (step ca): the CA (EC P-256, 10 years), kept while it has
#   more than a year left. A new one replaces it then, and the old
#   certificate stays trusted (ca-previous.crt) until it expires, so API
#   Management accepts the interceptor's certificate whichever CA signed the
#   one it is serving.
# - apim-ca.json (step ca): the CA certificates API Management trusts, a JSON
#   array of base64 DER (Bicep's parameter interceptorCaCertificates).
# - tls.crt, tls.key (step cert): the interceptor's certificate (EC P-256,
#   397 days, subjectAltName IP:<ip address> and DNS:<name>; API Management
#   checks the name against the address it forwards to, Bicep's
#   ingestBackendIp). Reissued when it has less than 30 days left, was not
#   issued by the current CA, or names another address or name; kept
#   otherwise, so a deploy changes nothing it need not.
# - renewed (step cert): present when tls.crt is new (deploy.sh restarts the
#   interceptor, which reads its certificate at start).
# Prints one line saying what it kept or issued. Needs openssl and python3.
set -euo pipefail
step=${1:?step (ca or cert)}; dir=${2:?directory}
cd "$dir"
umask 077
log() { echo "interceptor TLS: $*"; }
valid_for() { [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend $(($2 * 86400)) >/dev/null 2>&1; }

ca() {
  if ! { valid_for ca.crt 365 && [ -s ca.key ]; }; then
    if valid_for ca.crt 0; then mv ca.crt ca-previous.crt; fi
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -days 3650 -subj "/CN=Tributary interceptor CA $(date -u +%Y-%m-%d)" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    log "new CA (expires $(openssl x509 -in ca.crt -noout -enddate | cut -d= -f2))"
  else
    log "kept the CA (expires $(openssl x509 -in ca.crt -noout -enddate | cut -d= -f2))"
  fi
  # A previous CA is trusted only while it has not expired.
  if [ -e ca-previous.crt ] && ! valid_for ca-previous.crt 0; then rm -f ca-previous.crt; fi
  local cas=(ca.crt)
  [ -e ca-previous.crt ] && cas+=(ca-previous.crt)
  for c in "${cas[@]}"; do openssl x509 -in "$c" -outform der | base64 -w0; echo; done \
    | python3 -c 'import json, sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()]))' >apim-ca.json
}

cert() {
  local ip=${1:?ip address} dns=${2:?name} names
  rm -f renewed
  [ -s ca.crt ] && [ -s ca.key ] || { echo "interceptor TLS: no CA in $PWD (run the ca step first)" >&2; exit 1; }
  names=$(openssl x509 -in tls.crt -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ' || true)
  if valid_for tls.crt 30 && [ -s tls.key ] \
    && openssl verify -CAfile ca.crt tls.crt >/dev/null 2>&1 \
    && [ "$names" = "IPAddress:$ip,DNS:$dns" ]; then
    log "kept the certificate for $ip ($dns), expires $(openssl x509 -in tls.crt -noout -enddate | cut -d= -f2)"
    return
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key.new -out tls.csr \
    -subj "/CN=$dns" 2>/dev/null
  printf 'subjectAltName=IP:%s,DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$ip" "$dns" >tls.ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -days 397 -extfile tls.ext -out tls.crt 2>/dev/null
  mv tls.key.new tls.key
  rm -f tls.csr tls.ext
  touch renewed
  log "issued a certificate for $ip ($dns), expires $(openssl x509 -in tls.crt -noout -enddate | cut -d= -f2)"
}

case $step in
  ca) ca ;;
  cert) cert "${3:-}" "${4:-}" ;;
  *) echo "interceptor TLS: unknown step '$step' (ca or cert)" >&2; exit 2 ;;
esac
