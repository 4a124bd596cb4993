"""Signing keys with `kid`s; rotation keeps the previous keys published for tokens in flight."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class StoredKey(TypedDict):
    """A signing key as the state file keeps it."""

    kid: str
    pem: str  # PKCS#8, unencrypted: the state dir is 0700 and the file 0600


class KeyRing:
    def __init__(self, state_dir: Path, keep: int = 3) -> None:
        self.path = state_dir / "signing-keys.json"
        self.keep = keep
        self.keys: list[StoredKey] = []  # newest first
        self._loaded: dict[str, rsa.RSAPrivateKey] = {}  # kid -> private key object (PEM parsing is slow)
        if self.path.exists():
            self.keys = json.loads(self.path.read_text())  # our own file, written by _save()
        if not self.keys:
            self.rotate()

    def rotate(self) -> str:
        """A new signing key; the previous ones stay published until pushed out."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        kid = f"rsa-{int(time.time())}-{secrets.token_hex(3)}"
        self.keys = [StoredKey(kid=kid, pem=pem), *self.keys][: self.keep]
        self._save()
        return kid

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.keys, handle)
        os.replace(tmp, self.path)

    @property
    def current_kid(self) -> str:
        return self.keys[0]["kid"]

    def _private(self, key: StoredKey) -> rsa.RSAPrivateKey:
        if key["kid"] not in self._loaded:
            private = serialization.load_pem_private_key(key["pem"].encode(), password=None)
            if not isinstance(private, rsa.RSAPrivateKey):  # rotate() makes only RSA keys: RS256 needs one
                raise ValueError(f"signing key {key['kid']} in {self.path} is not an RSA key")
            self._loaded[key["kid"]] = private
        return self._loaded[key["kid"]]

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.keys[0]
        return jwt.encode(claims, self._private(key), algorithm="RS256", headers={"kid": key["kid"], "typ": "at+jwt"})

    def jwks(self) -> dict[str, Any]:
        out = []
        for key in self.keys:
            private = self._private(key)
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            jwk.update(kid=key["kid"], use="sig", alg="RS256")
            out.append(jwk)
        return {"keys": out}

    def verify(self, token: str, issuer: str) -> dict[str, Any]:
        """Claims of a token we issued (any published key), or jwt.PyJWTError."""
        header = jwt.get_unverified_header(token)
        for key in self.keys:
            if key["kid"] == header.get("kid"):
                return jwt.decode(
                    token,
                    self._private(key).public_key(),
                    algorithms=["RS256"],
                    issuer=issuer,
                    options={"verify_aud": False},
                )
        raise jwt.InvalidKeyError(f"unknown kid {header.get('kid')!r}")


def new_jti() -> str:
    return str(uuid.uuid4())
