#!/usr/bin/env bash
# The main job on the embedded local site: start a real Slurm, XRootD, Rucio and IdP,
# two site sidecars and the gateway (deploy/local/federation.sh); run every pod in
# examples/ through the interLink plugin API, then through the gateway as the
# Virtual Kubelet sends them (two sites; a pod under its owner's own identity). None of our
# daemons runs as root: the sidecars run as the service account ilp, each pod account's work
# done by its own agent (sudo, one rule), the devidp as ilp-idpd and the gateway as ilp-gatewayd.
#   deploy/local/demo.sh [--keep]     --keep leaves the site, sidecars and gateway running
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
KEEP=0
[[ ${1:-} == --keep ]] && KEEP=1

bash deploy/local/install.sh
export ILP_SITE_DIR=${ILP_SITE_DIR:-$REPO/.site}
bash deploy/local/site.sh start
eval "$(bash deploy/local/site.sh env)"
BIN=${ILP_VENV:-$REPO/.venv}/bin
export ILP_SIDECAR=unix://$ILP_SITE_DIR/sidecar/sidecar.sock

bash deploy/local/federation.sh start
eval "$(bash deploy/local/federation.sh env)"
cleanup() {
  if (( KEEP )); then
    echo "[demo] left running: the sidecars, the gateway ($ILP_GATEWAY) and the site; stop with:"
    echo "       bash deploy/local/federation.sh stop; bash deploy/local/site.sh stop"
    return
  fi
  bash deploy/local/federation.sh stop
  bash deploy/local/site.sh stop
}
trap cleanup EXIT

status=0
for example in examples/*.yaml; do
  case $example in examples/*site*.yaml | examples/gateway.yaml) continue ;; esac  # configs, not pods
  echo
  echo "=== $example"
  "$BIN/interlink-provider" pod run --rm --timeout 300 "$example" || status=1
done
echo
echo "=== trust network: a token from the local IdP, checked and mapped by the site"
CA=$ILP_SITE_DIR/devidp/ca.pem
TOKEN_FILE=$ILP_SITE_DIR/demo-token
( umask 077
  curl -sf --cacert "$CA" -u demo-user:demo-secret https://127.0.0.1:8480/token \
    -d grant_type=client_credentials -d audience=https://127.0.0.1:4480 \
    --data-urlencode "scope=compute.create compute.read compute.cancel wlcg.groups" \
  | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' >"$TOKEN_FILE" )
export BEARER_TOKEN_FILE=$TOKEN_FILE
"$BIN/interlink-provider" token verify --issuer https://127.0.0.1:8480/ --ca-file "$CA" --development \
  --audience https://127.0.0.1:4480 --scope compute.create || status=1
export ILP_SIDECAR_CA=$ILP_SITE_DIR/pki/ca.pem   # the sidecar's TCP listener is HTTPS with the site's CA
"$BIN/interlink-provider" token whoami --site https://127.0.0.1:4480 || status=1
"$BIN/interlink-provider" pod --sidecar https://127.0.0.1:4480 run --rm --timeout 300 examples/hello.yaml || status=1
echo
echo "=== datalake with tokens: TOKEN_XRD (TLS + ztn + SciTokens) serves only tokens of the site IdP"
STORAGE_TOKEN=$ILP_SITE_DIR/demo-storage-token
( umask 077
  curl -sf --cacert "$CA" -u site-stager:stager-secret https://127.0.0.1:8480/token \
    -d grant_type=client_credentials -d audience=https://127.0.0.1:11096 \
    --data-urlencode "scope=storage.read:/ storage.create:/user" \
  | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' >"$STORAGE_TOKEN" )
DEMO_FILE=$ILP_SITE_DIR/demo-token-upload.txt
echo "written with a storage token at $(date -u +%FT%TZ)" >"$DEMO_FILE"
DID=user:demo-token-$(date +%s).txt
STAGE=(env -u BEARER_TOKEN_FILE "$BIN/interlink-provider" stage)
SITE_CONFIG=(--config deploy/local/sidecar.yaml)
"${STAGE[@]}" put "$DEMO_FILE" --rse TOKEN_XRD --did "$DID" "${SITE_CONFIG[@]}" --token-file "$STORAGE_TOKEN" || status=1
echo "[demo] reading it without a token must be refused:"
if "${STAGE[@]}" check "$DID" "${SITE_CONFIG[@]}"; then echo "[demo] anonymous read was NOT refused"; status=1; fi
echo "[demo] ...and with the token it is fine:"
"${STAGE[@]}" check "$DID" "${SITE_CONFIG[@]}" --token-file "$STORAGE_TOKEN" || status=1
echo
echo "=== the gateway: pods as the Virtual Kubelet sends them, routed to two sites over gRPC + TLS"
"$BIN/interlink-provider" pod --gateway "$ILP_GATEWAY" run --rm --timeout 300 examples/federation/two-sites.yaml || status=1
echo
echo "=== your own identity at the site: token login (device flow) writes the Secret a pod names"
LOGIN_ERR=$ILP_SITE_DIR/gateway/login.err
IDENTITY=$ILP_SITE_DIR/gateway/my-identity.yaml
"$BIN/interlink-provider" token login --issuer https://127.0.0.1:8480/ --ca-file "$CA" \
  --namespace team-a --secret-name my-identity -o "$IDENTITY" 2>"$LOGIN_ERR" &
LOGIN=$!
for _ in $(seq 100); do grep -q "enter the code" "$LOGIN_ERR" && break; sleep 0.1; done
CODE=$(sed -n 's/.*enter the code \([^ ]*\).*/\1/p' "$LOGIN_ERR")
echo "[demo] approving code $CODE as user demo (what you would do in a browser)"
curl -sf --cacert "$CA" https://127.0.0.1:8480/device -d user_code="$CODE" -d username=demo -d password=demo >/dev/null
wait "$LOGIN" || status=1
cat "$LOGIN_ERR"
( umask 077; cat "$IDENTITY"; echo ---; cat examples/federation/as-myself.yaml ) >"$ILP_SITE_DIR/gateway/as-myself.yaml"
"$BIN/interlink-provider" pod --gateway "$ILP_GATEWAY" run --rm --timeout 300 "$ILP_SITE_DIR/gateway/as-myself.yaml" || status=1
echo
echo "=== operability: doctor on the site's and the gateway's configs; the gateway's metrics"
"$BIN/interlink-provider" doctor --config deploy/local/sidecar.yaml || status=1
"$BIN/interlink-provider" doctor --config deploy/local/gateway.yaml || status=1
curl -sf --unix-socket "$ILP_SITE_DIR/gateway/gateway.sock" http://gateway/metrics \
  | grep -E '^ilp_(pods|site_up|request_seconds_count)\{' || status=1
echo "[demo] the sidecar's status page (HTML): curl --unix-socket $ILP_SITE_DIR/sidecar/sidecar.sock http://sidecar/ui"
echo
"$BIN/interlink-provider" pod list
exit "$status"
