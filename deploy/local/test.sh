#!/usr/bin/env bash
# The whole test suite against the embedded local site (real Slurm, real sidecars), after the
# static checks (deploy/local/lint.sh: ruff, import contracts, mypy, generated docs; ILP_LINT=0 skips them).
# The site and the Kubernetes control plane (deploy/local/k8s.sh) are started first (and stopped
# afterwards if this script started them); the tests run in parallel workers (one test file per
# worker at a time), then the tests marked `serial`, which stop or reconfigure the shared
# slurmctld, run alone.
# Extra arguments go to both pytest runs.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
bash deploy/local/install.sh
lint=0
if [[ ${ILP_LINT:-1} != 0 ]]; then
  bash deploy/local/lint.sh || lint=$?
fi
# The status page's browser test drives Debian's headless Chromium (a test-only package).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  echo "[test] installing chromium" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi
export ILP_SITE_DIR=${ILP_SITE_DIR:-$REPO/.site}
PYTEST=${ILP_VENV:-$REPO/.venv}/bin/pytest
WORKERS=${ILP_TEST_WORKERS:-3}

stop_site=0
stop_k8s=0
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  (( stop_k8s )) && { bash deploy/local/k8s.sh stop >/dev/null 2>&1 || true; }
  (( stop_site )) && { bash deploy/local/site.sh stop >/dev/null 2>&1 || true; }
  return 0
}
trap cleanup EXIT
bash deploy/local/site.sh status | grep -q "slurmctld running" || stop_site=1
bash deploy/local/site.sh start
# A real Kubernetes control plane for tests/e2e/test_kubernetes.py: on a clean clone the first
# start builds it from its Go modules (deploy/local/k8s.sh; cached in .site/k8s/build afterwards).
bash deploy/local/k8s.sh status | grep -q "kube-apiserver ready" || stop_k8s=1
bash deploy/local/k8s.sh start || echo "[test] the Kubernetes control plane did not start: tests/e2e/test_kubernetes.py will fail" >&2

status=0
"$PYTEST" -n "$WORKERS" --dist loadfile -m "not serial" --durations=15 "$@" || status=$?
serial=0
"$PYTEST" -m serial "$@" || serial=$?
(( status == 5 )) && status=0  # 5: no test selected in this half
(( serial == 5 )) && serial=0
(( lint != 0 )) && echo "[test] the static checks failed (deploy/local/lint.sh)" >&2
exit $(( status != 0 ? status : serial != 0 ? serial : lint ))
