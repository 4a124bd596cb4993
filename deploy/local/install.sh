#!/usr/bin/env bash
# Everything the local site, the demo and the tests need, idempotently:
# Debian packages (Slurm, munge, bubblewrap, ...) and a virtualenv with the project.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"

bash deploy/local/site.sh install

VENV=${ILP_VENV:-$REPO/.venv}
# The service account and the pod accounts run this venv's interlink-provider (the sidecar, the
# per-account agents): its interpreter must be one every account can execute. Debian's is; one
# under /root (pyenv) is not, so a venv made from it is made again.
PYTHON=${ILP_PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
if [[ -x $VENV/bin/python ]] && ! runuser -u nobody -- "$VENV/bin/python" -c '' 2>/dev/null; then
  echo "[install] $VENV's interpreter cannot be run by other accounts: making it again from $PYTHON" >&2
  rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
  echo "[install] creating $VENV ($PYTHON)" >&2
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import interlink_provider, pytest, aiohttp, pytest_asyncio, hypothesis, rucio, XRootD, htcondor2, importlinter, mypy" 2>/dev/null \
   || [[ pyproject.toml -nt $VENV/.installed ]]; then
  echo "[install] installing the project into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,staging,htcondor,lint]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  touch "$VENV/.installed"
fi

# The interop tests' independent OpenID Provider (tests/interop_idp: panva's oidc-provider, pinned
# by its package-lock.json), installed again only when the lock file is newer than the last install.
IDP=tests/interop_idp
if [[ ! -f $IDP/node_modules/.installed || $IDP/package-lock.json -nt $IDP/node_modules/.installed ]]; then
  if ! command -v npm >/dev/null; then
    echo "[install] npm not found: the interop tests (tests/interop_idp) need Node.js 20+ and npm" >&2
  else
    echo "[install] npm ci in $IDP" >&2
    (cd "$IDP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$IDP/node_modules/.installed"
  fi
fi

# Go builds the Kubernetes control plane of tests/e2e/test_kubernetes.py (deploy/local/k8s.sh,
# from the wrapper modules in deploy/local/k8s/: go 1.26 or later; Debian 12's golang is older).
if ! command -v go >/dev/null; then
  echo "[install] no Go toolchain: deploy/local/k8s.sh (the Kubernetes tests) needs go >= 1.26" >&2
fi
