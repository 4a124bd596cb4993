#!/usr/bin/env bash
# The static checks CI runs before the tests (tox.ini has one environment for each):
# ruff (rules and formatting), the floor plan's import contracts, mypy, the generated docs.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
VENV=${ILP_VENV:-$REPO/.venv}
status=0
run() {
  echo "[lint] $*" >&2
  "$@" || status=1
}
run "$VENV/bin/ruff" check .
run "$VENV/bin/ruff" format --check .
run "$VENV/bin/lint-imports" --no-cache
run "$VENV/bin/mypy"
run "$VENV/bin/python" docs/generate.py --check
exit $status
