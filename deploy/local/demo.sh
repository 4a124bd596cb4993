#!/usr/bin/env bash
# The main job on the embedded local site: start a real Slurm, start the sidecar,
# run every pod in examples/ through the interLink plugin API, show the results.
#   deploy/local/demo.sh [--keep]     --keep leaves the site and the sidecar running
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

mkdir -p "$ILP_SITE_DIR/sidecar"   # the IdP (devidp) is part of the site: site.sh started it
rm -f "${ILP_SIDECAR#unix://}"
"$BIN/interlink-provider" sidecar --config deploy/local/sidecar.yaml >>"$ILP_SITE_DIR/sidecar/sidecar.log" 2>&1 &
SIDECAR=$!
echo "$SIDECAR" >"$ILP_SITE_DIR/sidecar/sidecar.pid"
cleanup() {
  if (( KEEP )); then
    echo "[demo] left running: sidecar (pid $SIDECAR, $ILP_SIDECAR) and the site; stop with:"
    echo "       kill $SIDECAR; bash deploy/local/site.sh stop"
    return
  fi
  kill "$SIDECAR" 2>/dev/null || true
  wait "$SIDECAR" 2>/dev/null || true
  bash deploy/local/site.sh stop
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -sf --unix-socket "${ILP_SIDECAR#unix://}" http://sidecar/healthz >/dev/null && break
  sleep 0.1
done

status=0
for example in examples/*.yaml; do
  case $example in examples/site*.yaml | examples/gateway.yaml) continue ;; esac
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
"$BIN/interlink-provider" token verify --issuer https://127.0.0.1:8480/ --ca-file "$CA" \
  --audience https://127.0.0.1:4480 --scope compute.create || status=1
"$BIN/interlink-provider" token whoami --site http://127.0.0.1:4480 || status=1
"$BIN/interlink-provider" pod --sidecar http://127.0.0.1:4480 run --rm --timeout 300 examples/hello.yaml || status=1
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
"$BIN/interlink-provider" pod list
exit "$status"
