"""Bootstrap the local site's Rucio (run with the Rucio server's own Python, idempotent).

    RUCIO_CONFIG=$SITE/rucio/rucio.cfg $SITE/rucio/venv/bin/python rucio_setup.py bootstrap
    RUCIO_CONFIG=... python rucio_setup.py populate XRD_PORT SLOW_XRD_PORT TOKEN_XRD_PORT ISSUER DATA_DIR

`bootstrap` creates the SQLite schema, the base VO and the root account. `populate`
(against the running server) creates the RSEs LOCAL_XRD (site LOCAL, the local
xrootd), SLOW_XRD (site REMOTE: the same files behind a throttled xrootd, so the
same PFNs) and TOKEN_XRD (site LOCAL, the token-authorized xrootd), gives root a
quota, creates the scopes `demo` and `user`, maps the site IdP's demo identities to
the root account (OIDC), and uploads the sample dataset `demo:input-data` that
examples/rucio-stage.yaml reads.
"""

from __future__ import annotations

import logging
import sys
import zlib
from pathlib import Path

RSE = "LOCAL_XRD"
SLOW_RSE = "SLOW_XRD"
TOKEN_RSE = "TOKEN_XRD"
# Subjects of deploy/local/devidp.yaml that act as Rucio's root account with their tokens:
# the demo user, the users' own clients, and the sidecar's staging client.
OIDC_SUBJECTS = ("demo", "demo-user", "demo-guest", "site-stager")
SCOPES = ("demo", "user")
DATASET = ("demo", "input-data")
SAMPLE_FILES = {"events-001.csv": 2000, "events-002.csv": 5000, "calibration.txt": 300}


def bootstrap() -> None:
    from rucio.db.sqla.util import build_database, create_base_vo, create_root_account

    build_database()
    create_base_vo()
    create_root_account()


class UploadLogger:
    """rucio 41's UploadClient wants a logger that is callable *and* has `.log`."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("rucio-setup")

    def __call__(self, level: int, msg: str, *args: object, **kwargs: object) -> None:
        self.logger.log(level, msg, *args)

    def log(self, level: int, msg: str, *args: object, **kwargs: object) -> None:
        self.logger.log(level, msg, *args)


def _ignore_duplicate(call, *args, **kwargs) -> None:
    from rucio.common.exception import Duplicate, RucioException

    try:
        call(*args, **kwargs)
    except Duplicate:
        pass
    except RucioException as exc:  # e.g. a protocol that exists already
        if "already exists" not in str(exc) and "Duplicate" not in type(exc).__name__:
            raise


def add_rse(client, rse: str, port: int, site: str) -> None:
    _ignore_duplicate(client.add_rse, rse)
    protocol = {
        "scheme": "root",
        "hostname": "127.0.0.1",
        "port": port,
        "prefix": "//rucio/",
        "impl": "rucio.rse.protocols.xrootd.Default",
        "domains": {
            "lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {"read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1, "third_party_copy_write": 1},
        },
    }
    if not _has_protocols(client, rse):
        client.add_protocol(rse, protocol)
    client.set_local_account_limit("root", rse, 100 * 1024**3)
    _ignore_duplicate(client.add_rse_attribute, rse, "site", site)


def populate(port: int, slow_port: int, token_port: int, issuer: str, data_dir: Path) -> None:
    from rucio.client import Client
    from rucio.client.uploadclient import UploadClient

    client = Client()
    add_rse(client, RSE, port, "LOCAL")
    add_rse(client, SLOW_RSE, slow_port, "REMOTE")
    add_rse(client, TOKEN_RSE, token_port, "LOCAL")
    known = {i["identity"] for i in client.list_identities("root")}
    for subject in OIDC_SUBJECTS:
        identity = f"SUB={subject}, ISS={issuer}"
        if identity not in known:
            client.add_identity("root", identity, "OIDC", f"{subject}@example.org", default=True)
    for scope in SCOPES:
        _ignore_duplicate(client.add_scope, "root", scope)
    existing = {f["name"] for f in client.list_files(*DATASET)} if _exists(client, *DATASET) else set()
    missing = [name for name in SAMPLE_FILES if name not in existing]
    if not missing:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for name in missing:
        path = data_dir / name
        lines = [f"{name},{i},{(i * 7919) % 1000}" for i in range(SAMPLE_FILES[name])]
        path.write_text("\n".join(lines) + "\n")
        items.append(
            {
                "path": str(path),
                "rse": RSE,
                "did_scope": DATASET[0],
                "did_name": name,
                "dataset_scope": DATASET[0],
                "dataset_name": DATASET[1],
                "register_after_upload": True,
            }
        )
    UploadClient(client, logger=UploadLogger()).upload(items)
    for name in missing:
        print(f"uploaded {DATASET[0]}:{name} adler32 {zlib.adler32((data_dir / name).read_bytes()):08x}")


def _has_protocols(client, rse: str) -> bool:
    return any(p.get("scheme") == "root" for p in client.get_rse(rse).get("protocols", []))


def _exists(client, scope: str, name: str) -> bool:
    from rucio.common.exception import DataIdentifierNotFound

    try:
        client.get_did(scope, name)
        return True
    except DataIdentifierNotFound:
        return False


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "bootstrap":
        bootstrap()
    elif sys.argv[1] == "populate":
        populate(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
    else:
        sys.exit(f"usage: {sys.argv[0]} bootstrap | populate XRD_PORT SLOW_XRD_PORT TOKEN_XRD_PORT ISSUER DATA_DIR")
