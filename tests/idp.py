"""A real devidp process (HTTP or HTTPS) for the trust-network tests, and what they need from it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import yaml

from interlink_provider.devidp.keys import new_jti
from tests.helpers import (
    IDP_ACCOUNT,
    account_environment,
    account_prefix,
    account_workdir,
    ensure_site_accounts,
    write_private,
)


def run_devidp(config: Path, *flags: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a devidp on `config` as the devidp account (a copy it can read, beside the original's
    account directory), expecting it to stop by itself (a refusal); one that serves times out."""
    readable = account_workdir(IDP_ACCOUNT, config.parent) / config.name
    write_private(readable, config.read_text(), IDP_ACCOUNT)
    return subprocess.run(
        [*account_prefix(IDP_ACCOUNT), sys.executable, "-m", "interlink_provider.cli.main", "devidp"]
        + ["--config", str(readable), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **account_environment(IDP_ACCOUNT)},
    )


EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
COMPUTE = ["compute.create", "compute.read", "compute.cancel"]
SITE_AUDIENCE = "https://site.test"


def token_auth(idp: IdP, rules: list[dict]) -> dict:
    """A sidecar's `auth` section: tokens of this IdP (development tokens: it is a devidp) for
    SITE_AUDIENCE on every call (no tokenless socket), identities mapped to accounts by `rules`
    (their `issuer` is filled in)."""
    return {
        "unix_socket_without_token": False,
        "token": {
            "issuers": [{"issuer": idp.issuer, "ca_file": idp.ca_file, "development": True}],
            "audiences": [SITE_AUDIENCE],
        },
        "identities": {"rules": [{"issuer": idp.issuer, **rule} for rule in rules]},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config(port: int, state_dir: Path, tls: bool) -> dict[str, Any]:
    user_scopes = [*COMPUTE, "wlcg.groups", "storage.read:/", "offline_access"]
    return {
        "host": "127.0.0.1",
        "port": port,
        "state_dir": str(state_dir),
        "admin_token": "test-admin-token",
        "tls": {"enabled": tls},
        "clients": {
            "alice": {
                "secret": "alice-secret",
                "grant_types": ["client_credentials"],
                "scopes": user_scopes,
                "groups": ["/vo/alice-team"],
            },
            "bob": {
                "secret": "bob-secret",
                "grant_types": ["client_credentials"],
                "scopes": user_scopes,
                "groups": ["/vo/bob-team"],
            },
            "mallory": {
                "secret": "mallory-secret",
                "grant_types": ["client_credentials"],
                "scopes": ["compute.read", "storage.read:/"],
            },
            "gateway": {
                "secret": "gateway-secret",
                "grant_types": ["client_credentials", EXCHANGE, "refresh_token"],
                "scopes": [*COMPUTE, "offline_access", "storage.read:/", "wlcg.groups"],
            },
            "cli": {"grant_types": [DEVICE, "refresh_token"], "scopes": [*COMPUTE, "offline_access", "wlcg.groups"]},
        },
        "users": {"carol": {"sub": "carol-sub", "password": "carol-pw", "groups": ["/vo/carol-team"]}},
        "exchange_policies": [
            {"description": "Allow all exchanges", "rule": "PERMIT"},
            {
                "description": "mallory's tokens are never exchanged",
                "rule": "DENY",
                "origin": {"type": "BY_ID", "match": "mallory"},
            },
            {
                "description": "bob only reads public data through the gateway",
                "rule": "PERMIT",
                "origin": {"type": "BY_ID", "match": "bob"},
                "destination": {"type": "BY_ID", "match": "gateway"},
                "scopes": [
                    {"type": "PATH", "match": "storage.read:/public"},
                    {"type": "REGEXP", "match": "compute\\..*"},
                    {"type": "EQ", "match": "offline_access"},
                ],
            },
        ],
    }


class IdP:
    """A devidp process. HTTPS on loopback; plain HTTP (tls=False) needs insecure_dev=True, which
    starts it with --insecure-dev, as the devidp refuses plain HTTP otherwise."""

    def __init__(self, workdir: Path, tls: bool = True, insecure_dev: bool = False, **overrides: Any) -> None:
        # It runs as the local site's devidp account, in a directory of its own (not root: no
        # interlink-provider daemon of the suite runs as root).
        ensure_site_accounts()
        self.user = IDP_ACCOUNT
        workdir = account_workdir(self.user, workdir)
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.insecure_dev = insecure_dev
        self.config_path = workdir / "idp.yaml"
        config = {**test_config(self.port, workdir / "state", tls), **overrides}
        write_private(self.config_path, yaml.safe_dump(config), self.user)
        self.log_path = workdir / "devidp.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    @property
    def ca_file(self) -> str | None:
        return str(self.workdir / "state" / "ca.pem") if self.tls else None

    def _ssl(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.tls else None

    def start(self) -> IdP:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                *account_prefix(self.user),
                sys.executable,
                "-m",
                "interlink_provider.cli.main",
                "devidp",
                "--config",
                str(self.config_path),
                *(["--insecure-dev"] if self.insecure_dev else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **account_environment(self.user)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devidp exited:\n{self.log_path.read_text()}")
            try:
                urllib.request.urlopen(self.issuer + "healthz", timeout=1, context=self._ssl())
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"devidp did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def rotate(self) -> str:
        request = urllib.request.Request(
            self.issuer + "admin/rotate-key", method="POST", headers={"Authorization": "Bearer test-admin-token"}
        )
        with urllib.request.urlopen(request, timeout=5, context=self._ssl()) as response:
            return json.load(response)["kid"]

    def signing_key(self) -> dict[str, str]:
        return json.loads((self.workdir / "state" / "signing-keys.json").read_text())[0]

    def forge(self, **overrides: Any) -> str:
        """A token signed with the IdP's current key, with chosen claims (for rejection tests)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": SITE_AUDIENCE,
            "iat": now,
            "nbf": now - 60,
            "exp": now + 600,
            "jti": new_jti(),
            "client_id": "alice",
            "scope": " ".join(COMPUTE),
            "wlcg.ver": "1.0",
        }
        headers = {"kid": overrides.pop("_kid", None) or self.signing_key()["kid"]}
        for key, value in overrides.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return jwt.encode(claims, self.signing_key()["pem"], algorithm="RS256", headers=headers)
