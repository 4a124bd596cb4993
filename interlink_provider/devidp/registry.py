"""Tokens for a container registry: the token authentication of CNCF Distribution ("Docker token auth").

A registry configured with `auth: token` sends every client without a token to a realm: this
endpoint. The client asks for `scope=repository:NAME:pull,push` with HTTP Basic credentials (a
devidp user's password or a client's secret) or none at all, and gets a short-lived JWT listing
the actions granted, which the registry checks with the certificate in its `rootcertbundle`.
The local site's registry (deploy/local/images.sh) works this way, as registries behind an IdP do
(Harbor, GitLab), so a pod's imagePullSecrets meet a real token exchange.

Who may do what is the config's `registry.rules`: the first rule whose repository pattern matches
decides; no rule, no access. Anonymous clients get what `"*"` is granted (public images).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .config import IdPConfig, RegistryConfig
from .keys import new_jti

ANYONE = "*"
ACTIONS = ("pull", "push")


class RegistryRefusal(Exception):
    """A request the token endpoint answers with an error (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Scope:
    """One `scope` parameter: `repository:library/busybox:pull,push`."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not kind or not name:
            raise RegistryRefusal(400, f"malformed scope {text!r}: expected TYPE:NAME:ACTIONS")
        return cls(kind, name, tuple(a for a in actions.split(",") if a))


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The `kid` Distribution computes for each key of its rootcertbundle (docker/libtrust): the
    SHA-256 of the key's DER form cut to 240 bits, base32, in colon-separated groups of four."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class SigningKey:
    """The registry tokens' own key (not the OIDC keys: a registry trusts a certificate, not a JWKS),
    kept in the state dir: `registry-token.key` (0600) and its self-signed `registry-token.pem`,
    which the registry's `rootcertbundle` names."""

    def __init__(self, state_dir: Path) -> None:
        self.key_path = state_dir / "registry-token.key"
        self.cert_path = state_dir / "registry-token.pem"
        if not (self.key_path.exists() and self.cert_path.exists()):
            self._create()
        loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{self.key_path} is not an RSA key")
        self.private = loaded
        self.kid = libtrust_key_id(loaded.public_key())

    def _create(self) -> None:
        self.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "interlink-provider devidp registry tokens")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(private, hashes.SHA256())
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(self.key_path, pem, 0o600)
        _write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class RegistryTokens:
    """Issues registry tokens by the config's rules."""

    def __init__(self, config: IdPConfig, issuer: str, settings: RegistryConfig) -> None:
        self.config = config
        self.issuer = issuer
        self.settings = settings
        self.key = SigningKey(Path(config.state_dir))

    def account(self, authorization: str | None) -> str:
        """The account of an `Authorization: Basic` header ("" when anonymous); wrong: refused."""
        if not authorization:
            return ""
        kind, _, value = authorization.partition(" ")
        if kind.lower() != "basic":
            raise RegistryRefusal(401, "only Basic credentials are accepted here")
        try:
            name, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryRefusal(400, "malformed Basic credentials") from None
        if not sep or not self._password_matches(name, password):
            raise RegistryRefusal(401, "invalid username or password")
        return name

    def _password_matches(self, name: str, password: str) -> bool:
        user = self.config.users.get(name)
        client = self.config.clients.get(name)
        expected = (user.password if user else None) or (client.secret if client else None)
        # Compared even for an unknown name, so that the answer takes as long.
        return hmac.compare_digest((expected or "\0unknown").encode(), password.encode()) and expected is not None

    def granted(self, account: str, scope: Scope) -> list[str]:
        """The actions of `scope` the first matching rule gives `account`."""
        if scope.type != "repository":
            return []
        for rule in self.settings.rules:
            if fnmatch.fnmatchcase(scope.name, rule.repository):
                allowed = {"pull": rule.pull, "push": rule.push}
                return [
                    action
                    for action in scope.actions
                    if action in allowed and (ANYONE in allowed[action] or (account and account in allowed[action]))
                ]
        return []

    def issue(self, service: str, scopes: list[str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint's answer for one request (RegistryRefusal when refused)."""
        if service != self.settings.service:
            raise RegistryRefusal(400, f"unknown service {service!r}: this realm serves {self.settings.service!r}")
        account = self.account(authorization)
        access = []
        for text in scopes:
            scope = Scope.parse(text)
            access.append({"type": scope.type, "name": scope.name, "actions": self.granted(account, scope)})
        now = int(time.time())
        lifetime = self.settings.token_lifetime
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "jti": new_jti(),
            "access": access,
        }
        token = self.key.sign(claims)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat().replace("+00:00", "Z")
        return {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued_at}
