#!/usr/bin/env bash
# Everything the local site, the demo and the tests need, idempotently:
# Debian packages (Slurm, munge, bubblewrap, ...) and a virtualenv with the project.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"

bash deploy/local/site.sh install

VENV=${ILP_VENV:-$REPO/.venv}
if [[ ! -x $VENV/bin/python ]]; then
  echo "[install] creating $VENV" >&2
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import interlink_provider, pytest, aiohttp, pytest_asyncio, hypothesis, rucio, XRootD, htcondor2, importlinter, mypy" 2>/dev/null \
   || [[ pyproject.toml -nt $VENV/.installed ]]; then
  echo "[install] installing the project into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,staging,htcondor,lint]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  touch "$VENV/.installed"
fi
