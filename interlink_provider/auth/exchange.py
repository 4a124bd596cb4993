"""Getting tokens from an IdP as a confidential client: client credentials, RFC 8693
exchange and refresh, with a cache that never serves an expired token.

The cache is keyed by (subject, audience, scope). An entry is served until
`margin` seconds before it expires; then it is refreshed with the refresh token the
IdP gave the actor (`offline_access`), rotating it, or exchanged again. Refresh
tokens are persisted (file mode 0600) so a restarted service keeps them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from ..telemetry.metrics import TOKEN_REQUESTS
from . import errors, grant
from .validate import LazySession, discovery_url, fetch_json, ssl_context

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Token:
    access_token: str
    expires_at: float
    scope: str = ""
    refresh_token: str | None = None

    def valid_for(self, seconds: float) -> bool:
        return self.expires_at - time.time() > seconds


def _is_uri(value: str) -> bool:
    parsed = urlsplit(value)
    return bool(parsed.scheme and parsed.netloc)


def _token_from(body: dict[str, Any]) -> Token:
    return Token(
        access_token=body["access_token"],
        expires_at=time.time() + float(body.get("expires_in", 0)),
        scope=body.get("scope", ""),
        refresh_token=body.get("refresh_token"),
    )


def basic_credentials(client_id: str, secret: str) -> str:
    """The Authorization header of client_secret_basic. RFC 6749 §2.3.1 has id and secret
    form-urlencoded before base64, and IdPs decode them (oidc-provider refuses what does not
    decode, authlib's devidp unquotes): a secret with `%`, `+`, `:` or a space sent raw fails or
    is read as another. Unreserved characters (IAM's generated secrets) encode to themselves."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"  # %20, not +: both decoders agree
    return "Basic " + base64.b64encode(pair.encode()).decode()


class OAuthClient(LazySession):
    """One confidential (or public) client of one issuer."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.ca_file = ca_file
        self.timeout = timeout
        self._meta: dict[str, Any] | None = None
        self.requests = 0

    async def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = await fetch_json(self.session(), discovery_url(self.issuer), self.ca_file, self.timeout)
        return self._meta

    async def _post(self, endpoint_key: str, form: dict[str, str]) -> dict[str, Any]:
        url = (await self.metadata()).get(endpoint_key)
        if not url:
            raise errors.IdPUnreachable(f"{self.issuer} publishes no {endpoint_key}")
        headers = {}
        if self.client_secret:  # client_secret_basic, as IAM's own clients do
            headers["Authorization"] = basic_credentials(self.client_id, self.client_secret)
        else:  # a public client names itself
            form = {**form, "client_id": self.client_id}
        self.requests += 1
        grant = form.get("grant_type", endpoint_key.removesuffix("_endpoint")).rsplit(":", 1)[-1]
        try:
            async with self.session().post(
                url,
                data=form,
                headers=headers,
                ssl=ssl_context(self.ca_file) or True,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            TOKEN_REQUESTS.labels(grant, "unreachable").inc()
            raise errors.IdPUnreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
        if status != 200 or not isinstance(body, dict) or "error" in body:
            error = body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}"
            description = body.get("error_description", "") if isinstance(body, dict) else ""
            refused = errors.ExchangeRefused(
                f"{self.issuer} refused: {error}" + (f": {description}" if description else "")
            )
            refused.oauth_error = error
            TOKEN_REQUESTS.labels(grant, "refused").inc()
            raise refused
        TOKEN_REQUESTS.labels(grant, "ok").inc()
        return body

    async def client_credentials(self, scope: str, audience: str | None = None) -> Token:
        return await self._granted({"grant_type": "client_credentials", "scope": scope}, audience)

    async def exchange(self, subject_token: str, audience: str | None, scope: str) -> Token:
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": scope,
        }
        return await self._granted(form, audience)

    async def _granted(self, form: dict[str, str], audience: str | None) -> Token:
        """A token asked for `audience` (as `audience`, and as an RFC 8707 `resource` when it is a
        URI: some IdPs honour only that one) and checked to be what was asked for: an IdP that
        ignores either gives a token for its default audience, or without the scopes, silently."""
        if audience:
            form = {**form, "audience": audience}
            if _is_uri(audience):
                form["resource"] = audience
        body = await self._post("token_endpoint", form)
        token = _token_from(body)
        said = body.get("scope") if isinstance(body.get("scope"), str) else None
        grant.check(token.access_token, said, form["scope"], audience, self.issuer, self.client_id)
        return token

    async def refresh(self, refresh_token: str, scope: str | None = None, audience: str | None = None) -> Token:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            form["scope"] = scope
        if audience:
            form["audience"] = audience
        token = _token_from(await self._post("token_endpoint", form))
        if token.refresh_token is None:
            token.refresh_token = refresh_token  # the IdP does not rotate: keep using it
        return token

    async def device_authorization(self, scope: str) -> dict[str, Any]:
        return await self._post("device_authorization_endpoint", {"scope": scope})

    async def device_token(self, device_code: str) -> Token:
        return _token_from(await self._post("token_endpoint", {"grant_type": DEVICE_CODE, "device_code": device_code}))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (tokens, refresh tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class ExchangeCache:
    def __init__(self, client: OAuthClient, store: Path | None = None, margin: float = 60.0) -> None:
        self.client = client
        self.store = store
        self.margin = margin
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.hits = self.exchanges = self.refreshes = 0
        if store is not None and store.exists():
            for key, value in json.loads(store.read_text()).items():
                self._tokens[key] = Token(**value)

    @staticmethod
    def key(subject: str, audience: str | None, scope: str) -> str:
        return "|".join([subject, audience or "", " ".join(sorted(scope.split()))])

    def _persist(self) -> None:
        if self.store is not None:
            data = {k: asdict(t) for k, t in self._tokens.items() if t.refresh_token}
            write_private(self.store, json.dumps(data))

    async def get(self, subject_token: str, audience: str | None, scope: str, subject: str | None = None) -> Token:
        """A token for (subject, audience, scope) valid for more than `margin` seconds."""
        subject = subject or hashlib.sha256(subject_token.encode()).hexdigest()
        key = self.key(subject, audience, scope)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is not None and cached.valid_for(self.margin):
                self.hits += 1
                return cached
            token = None
            if cached is not None and cached.refresh_token:
                try:
                    token = await self.client.refresh(cached.refresh_token, audience=audience)
                    self.refreshes += 1
                except errors.ExchangeRefused:
                    token = None  # revoked or expired refresh token: exchange again
            if token is None:
                token = await self.client.exchange(subject_token, audience, scope)
                self.exchanges += 1
            if not token.valid_for(0):
                raise errors.ExchangeRefused("the IdP issued an already expired token")
            self._tokens[key] = token
            self._persist()
            return token
