"""ScriptedIdP, a test double of an IdP for the validator's unit tests: its discovery document and
JWKS served over real HTTP on loopback (aiohttp's TestServer), answering what the test sets
(`status`: 200, or 503 for an outage) and counting every request by path. It signs tokens with
its own RSA key, with chosen claims and header fields. The tests of whole flows use the real
devidp (tests/idp.py)."""

from __future__ import annotations

import collections
import functools
import json
import time
import uuid
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_encode

from interlink_provider.auth.validate import TokenValidator, TrustedIssuer, ValidationConfig

AUDIENCE = "https://site.test"
DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/jwk"
TOKEN = "/token"


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    """One RSA key for every ScriptedIdP of the process: making one takes a while on a busy host."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class ScriptedIdP:
    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.private_key = _signing_key()
        self.status = 200  # what both endpoints answer
        self.jwks_body: object = None  # what the JWKS endpoint serves instead of the key set, when set
        self.requests: collections.Counter[str] = collections.Counter()
        app = web.Application()
        app.router.add_get(DISCOVERY, self._discovery)
        app.router.add_get(JWKS, self._jwks)
        app.router.add_post(TOKEN, self._token)
        self.token_answer: dict[str, Any] = {}  # what the token endpoint answers (200)
        self.token_forms: list[dict[str, str]] = []  # every form posted to it
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> ScriptedIdP:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    @property
    def issuer(self) -> str:
        return str(self.server.make_url("/"))

    def _refused(self, request: web.Request) -> web.Response | None:
        self.requests[request.path] += 1
        return None if self.status == 200 else web.Response(status=self.status, text="down for maintenance")

    async def _discovery(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        base = self.issuer.rstrip("/")
        return refused or web.json_response(
            {"issuer": self.issuer, "jwks_uri": base + JWKS, "token_endpoint": base + TOKEN}
        )

    async def _token(self, request: web.Request) -> web.Response:
        self.token_forms.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response(self.token_answer)

    async def _jwks(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        body = self.jwks_body or {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        return refused or web.json_response(body)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """A valid WLCG access token's claims; an override of None leaves that claim out."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now - 60,
            "exp": now + 3600,
            "jti": str(uuid.uuid4()),
            "client_id": "alice-client",
            "scope": "compute.create compute.read",
            "wlcg.ver": "1.0",
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, header: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A token signed with this IdP's key (header: extra or replaced header fields)."""
        return jwt.encode(
            self.claims(**overrides), self.private_key, algorithm="RS256", headers={"kid": self.kid, **(header or {})}
        )

    def sign_raw(self, payload: str, header: str | None = None, encoding: str = "utf-8") -> str:
        """A token over exactly this JSON text (what a dict cannot hold: a name given twice)."""
        header = header or json.dumps({"alg": "RS256", "kid": self.kid})
        parts = (header.encode(), payload.encode(encoding))
        signing_input = ".".join(base64url_encode(part).decode() for part in parts)
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
            signing_input.encode(), self.private_key
        )
        return signing_input + "." + base64url_encode(signature).decode()

    def validator(self, issuer: str | None = None, **config: Any) -> TokenValidator:
        """A validator trusting this IdP (as `issuer`, when the test spells it otherwise)."""
        trusted = TrustedIssuer(issuer=issuer or self.issuer, **config.pop("trusted", {}))
        return TokenValidator(ValidationConfig(issuers=[trusted], audiences=[AUDIENCE], **config))
