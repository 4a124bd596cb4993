"""`interlink-provider doctor` against the real local site: every check passes on a healthy
config, and each dependency broken in turn fails its own line (and only that one)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.federation import GatewayProcess, grpc_sidecar
from tests.helpers import LOCAL_CONFIG, Sidecar, site_dir
from tests.idp import SITE_AUDIENCE, free_port

pytestmark = pytest.mark.slurm
ISSUER = "https://127.0.0.1:8480/"


def doctor(config: Path, **overrides: str) -> tuple[int, dict[str, dict]]:
    """Run the CLI with ILP__ overrides; its checks by name."""
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir()), **{f"ILP__{k}": v for k, v in overrides.items()}}
    done = subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", "doctor", "--json", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, {check["name"]: check for check in json.loads(done.stdout)}


def certificate(path: Path, days: float) -> tuple[Path, Path]:
    """A self-signed certificate valid for `days` from now (negative: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = path / "cert.pem", path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def config(local_site, tmp_path_factory) -> Path:
    """The local site's sidecar config, with the site's own client for tokens (not started)."""
    root = tmp_path_factory.mktemp("doctor")
    secret = root / "stager-secret"
    secret.write_text("stager-secret\n")
    secret.chmod(0o600)
    tokens = {
        "issuer": ISSUER,
        "ca_file": str(site_dir() / "devidp" / "ca.pem"),
        "client_id": "site-stager",
        "client_secret_file": str(secret),
        "storage_audience": "https://127.0.0.1:11096",
        "storage_endpoints": ["127.0.0.1:11096"],
        "rucio_audience": None,
        "x509_cert_dir": str(site_dir() / "pki" / "ca-dir"),
    }
    # The local site's gRPC section (its certificates): doctor checks them, it never listens.
    grpc = yaml.safe_load(LOCAL_CONFIG.read_text())["grpc"]
    sidecar = Sidecar(root, {"staging": {"tokens": tokens}, "grpc": grpc})
    return sidecar.config_path


def test_a_healthy_site_passes_every_check(config):
    code, checks = doctor(config)
    verdicts = {name: check["verdict"] for name, check in checks.items()}
    assert code == 0 and set(verdicts.values()) == {"ok"}, checks
    assert {
        "config",
        "scheduler",
        "runtime",
        "working area",
        "state directory",
        f"IdP {ISSUER}",
        "token",
        "Rucio",
        "XRootD 127.0.0.1:11096",
        "XRootD 127.0.0.1:11094",
        "gRPC TLS",
    } <= set(checks)
    assert "accepted as site-stager" in checks["token"]["detail"]


@pytest.mark.parametrize(
    "broken, overrides, lines",
    [
        ("scheduler", {"slurm__sinfo": "/nonexistent/sinfo"}, ["scheduler"]),
        ("runtime", {"runtime__sandbox__executable": "no-such-bwrap"}, ["runtime"]),
        ("working area", {"pods_root": "/proc/ilp-doctor"}, ["working area"]),
        # the only trusted IdP is unreachable: no token of the real one can be accepted either
        (
            "IdP",
            {"auth__token__issuers": '[{"issuer": "https://127.0.0.1:1/"}]'},
            ["IdP https://127.0.0.1:1/", "token"],
        ),
        # the site's client also gets the token storages' tokens
        ("site client", {"staging__tokens__client_id": "no-such-client"}, ["token", "XRootD 127.0.0.1:11096"]),
        ("Rucio", {"staging__rucio__host": "http://127.0.0.1:1"}, ["Rucio"]),
        (
            "XRootD",
            {"staging__tokens__storage_endpoints": '["127.0.0.1:1"]', "staging__connection_window": "2"},
            ["XRootD 127.0.0.1:1"],
        ),
    ],
)
def test_each_broken_dependency_fails_its_own_line(config, broken, overrides, lines):
    code, checks = doctor(config, **overrides)
    failed = sorted(name for name, check in checks.items() if check["verdict"] == "FAIL")
    assert code == 1 and failed == sorted(lines), (broken, checks)
    assert all(checks[line]["fix"] for line in lines), checks


def test_certificates_near_or_past_expiry(config, tmp_path):
    soon = tmp_path / "soon"
    soon.mkdir()
    cert, key = certificate(soon, days=3)
    code, checks = doctor(config, grpc__tls_cert=str(cert), grpc__tls_key=str(key))
    assert code == 0 and checks["gRPC TLS"]["verdict"] == "warn" and "expires in" in checks["gRPC TLS"]["detail"]
    past = tmp_path / "past"
    past.mkdir()
    cert, key = certificate(past, days=-1)
    code, checks = doctor(config, grpc__tls_cert=str(cert), grpc__tls_key=str(key))
    assert code == 1 and checks["gRPC TLS"]["verdict"] == "FAIL" and "expired" in checks["gRPC TLS"]["detail"]


def test_a_broken_config_is_the_first_and_only_answer(tmp_path):
    """No report at all: one line naming the key, exit 2 (bad input, as `sidecar` would refuse the file)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {socket: /tmp/x.sock}\nstate_dir: /tmp\npods_root: /tmp\nslurm: {sbtach: sbatch}\n")
    done = subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", "doctor", "--json", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.strip().splitlines() == [
        f"interlink-provider doctor: invalid configuration {bad}: slurm.sbtach: Extra inputs are not permitted"
    ]


# ---------------------------------------------------------------------------- a gateway's config


@pytest.fixture(scope="module")
def gateway_config(local_site, unix_accounts, idp, tmp_path_factory):
    """A gateway config (not started) in front of one real gRPC sidecar."""
    root = tmp_path_factory.mktemp("doctor-gw")
    sidecar = grpc_sidecar(root / "alpha", idp)
    config = GatewayProcess(root / "gw", idp, {"alpha": sidecar}).config_path
    yield config
    sidecar.stop()
    shutil.rmtree(sidecar.scratch, ignore_errors=True)


def variant(config: Path, tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(config.read_text())
    change(raw)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_healthy_gateway_passes_every_check(gateway_config, idp):
    code, checks = doctor(gateway_config)
    assert code == 0, checks
    assert {name: c["verdict"] for name, c in checks.items()} == {
        "config": "ok",
        f"IdP {idp.issuer}": "ok",
        f"token for {SITE_AUDIENCE}": "ok",
        "site alpha": "ok",
        "site alpha TLS": "ok",
        "grants file": "skip",
    }
    assert "interlink-provider" in checks["site alpha"]["detail"]


def _wrong_secret(raw: dict, tmp_path: Path) -> None:
    secret = tmp_path / "wrong-secret"
    secret.write_text("not-the-secret\n")
    secret.chmod(0o600)
    raw["identity"]["client_secret_file"] = str(secret)


def _open_grants(raw: dict, tmp_path: Path) -> None:
    grants = tmp_path / "grants.json"
    grants.write_text("{}")
    grants.chmod(0o644)
    raw["identities"] = {"grants_file": str(grants)}


@pytest.mark.parametrize(
    "broken, change, failing",
    [
        ("gateway secret", _wrong_secret, {f"token for {SITE_AUDIENCE}"}),
        (
            "site down",
            lambda raw, _: raw["sites"][0].update(target=f"127.0.0.1:{free_port()}"),
            {"site alpha", "site alpha TLS"},
        ),
        (
            "site CA",
            lambda raw, _: raw["sites"][0].update(ca_file=str(site_dir() / "pki" / "ca.pem")),
            {"site alpha", "site alpha TLS"},
        ),
        (
            "audience the site refuses",
            lambda raw, _: raw["sites"][0].update(audience="https://elsewhere.test"),
            {"site alpha"},
        ),
        ("grants readable by others", _open_grants, {"grants file"}),
    ],
)
def test_each_broken_gateway_dependency_fails_its_own_line(gateway_config, tmp_path, broken, change, failing):
    code, checks = doctor(variant(gateway_config, tmp_path, lambda raw: change(raw, tmp_path)))
    failed = {name for name, check in checks.items() if check["verdict"] == "FAIL"}
    assert code == 1 and failed == failing, (broken, checks)
    assert all(checks[name]["fix"] for name in failed)
