#!/usr/bin/env bash
# The whole test suite against the embedded local site (real Slurm, real sidecars).
# The pytest session starts the site if it is not running and stops it afterwards.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
bash deploy/local/install.sh
export ILP_SITE_DIR=${ILP_SITE_DIR:-$REPO/.site}
exec "${ILP_VENV:-$REPO/.venv}/bin/pytest" "$@"
