"""A second, independent OpenID Provider for the interop tests: panva's oidc-provider (npm, OpenID
Certified), which this project did not write, run from tests/interop_idp/ by Node.

Our devidp (tests/idp.py) and ScriptedIdP (tests/scripted_idp.py) are written to what we believe
the standards say; an IdP written by others shows where that belief and theirs differ. Its
discovery, JWKS, signing, client authentication, client credentials, resource indicators (RFC 8707)
and JWT access tokens (RFC 9068) are its own; only the RFC 8693 grant handler is ours
(tests/interop_idp/token_exchange.mjs: oidc-provider has none). `deploy/local/install.sh` runs
`npm ci` there.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from interlink_provider.devidp.tls import ensure_certificates
from tests.helpers import IDP_ACCOUNT, account_environment, account_prefix, account_workdir, ensure_site_accounts
from tests.idp import COMPUTE, EXCHANGE, SITE_AUDIENCE

HERE = Path(__file__).parent / "interop_idp"
GATEWAY_AUDIENCE = "https://gateway.test"  # the resource a user's token is for, before the exchange
# What each resource's JWT access tokens may carry (oidc-provider grants the asked ∩ these).
RESOURCES = {
    SITE_AUDIENCE: " ".join([*COMPUTE, "storage.read:/"]),
    GATEWAY_AUDIENCE: " ".join(COMPUTE),
}
# A secret with characters RFC 6749 §2.3.1 has form-urlencoded in HTTP Basic (oidc-provider decodes them).
ODD_SECRET = "s3cr+t:%/ ~"  # VSCHARs (RFC 6749 appendix A.2)


def _client(client_id: str, secret: str, *grants: str, **metadata: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_secret": secret,
        "grant_types": list(grants),
        "redirect_uris": [],
        "response_types": [],
        **metadata,
    }


def clients() -> list[dict[str, Any]]:
    """alice: a user (client credentials); gateway: exchanges users' tokens; odd: a secret with
    characters to encode; web: a relying party that gets ID tokens (authorization code)."""
    return [
        _client("alice", "alice-secret", "client_credentials"),
        _client("gateway", "gateway-secret", "client_credentials", EXCHANGE),
        _client("odd", ODD_SECRET, "client_credentials"),
        _client(
            "web",
            "web-secret",
            "authorization_code",
            redirect_uris=["https://rp.test/callback"],
            response_types=["code"],
        ),
    ]


class IndependentIdP:
    """An oidc-provider process over HTTPS on a free loopback port, as the devidp account, with a
    local CA (the devidp's): its issuer is known once it has printed it."""

    def __init__(self, workdir: Path) -> None:
        ensure_site_accounts()
        self.user = IDP_ACCOUNT
        self.workdir = account_workdir(self.user, workdir)
        ca, cert, key = ensure_certificates(self.workdir / "tls", "127.0.0.1")
        for private in (key.parent, key):  # 0700 and 0600: the server reads them as that account
            os.chown(private, pwd.getpwnam(self.user).pw_uid, -1)
        self.ca_file = str(shutil.copy(ca, self.workdir / "ca.pem"))  # for every account (a sidecar's too)
        self.config_path = self.workdir / "idp.json"
        config = {"cert": str(cert), "key": str(key), "clients": clients(), "resources": RESOURCES}
        self.config_path.write_text(json.dumps(config))
        self.log_path = self.workdir / "oidc-provider.log"
        self.process: subprocess.Popen[str] | None = None
        self.issuer = ""

    def start(self, timeout: float = 60) -> IndependentIdP:
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"node or {HERE}/node_modules missing: run deploy/local/install.sh")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*account_prefix(self.user), node, str(HERE / "server.mjs"), str(self.config_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **account_environment(self.user)},
            )
        self.issuer = self._announced(timeout)
        return self

    def _announced(self, timeout: float) -> str:
        """The issuer the server prints once it listens (read in a thread: a hung start times out)."""
        assert self.process is not None and self.process.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not lines or not lines[0].startswith("issuer https://"):
            self.stop()
            raise RuntimeError(f"oidc-provider did not start: {lines}\n{self.log_path.read_text()}")
        return lines[0].split()[1]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process and self.process.stdout:
            self.process.stdout.close()

    def authorization_url(self, nonce: str, state: str) -> str:
        query = {
            "client_id": "web",
            "response_type": "code",
            "scope": "openid",
            "redirect_uri": "https://rp.test/callback",
            "nonce": nonce,
            "state": state,
        }
        return f"{self.issuer}/auth?{urllib.parse.urlencode(query)}"


def new_nonce() -> str:
    return secrets.token_urlsafe(16)
