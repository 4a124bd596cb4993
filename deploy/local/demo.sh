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

mkdir -p "$ILP_SITE_DIR/sidecar"
rm -f "${ILP_SIDECAR#unix://}"
"$BIN/interlink-provider" sidecar --config deploy/local/sidecar.yaml >>"$ILP_SITE_DIR/sidecar/sidecar.log" 2>&1 &
SIDECAR=$!
echo "$SIDECAR" >"$ILP_SITE_DIR/sidecar/sidecar.pid"
cleanup() {
  if (( KEEP )); then
    echo "[demo] left running: sidecar (pid $SIDECAR, $ILP_SIDECAR) and Slurm; stop with:"
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
  case $example in examples/site*.yaml) continue ;; esac
  echo
  echo "=== $example"
  "$BIN/interlink-provider" pod run --rm --timeout 300 "$example" || status=1
done
echo
"$BIN/interlink-provider" pod list
exit "$status"
