"""Storage and Rucio tokens for staging, from the trust network.

A pod created with a bearer token is *enrolled*: its token is exchanged (RFC 8693)
once, at create, for the pod owner's identity with every scope the pod's staging
needs plus `offline_access`. Only the refresh token is kept (in a 0600 file, so a
restarted sidecar still stages out a pod created hours ago); each transfer step
then refreshes it into a short access token narrowed to one audience and purpose
(read the inputs, create the outputs under their Rucio scope, talk to Rucio). An
exchange the IdP refuses (the owner may not touch that storage) refuses the pod at
create, before anything runs. A pod created without a token (the trusted unix
socket) stages with the site client's own tokens (client credentials).

Tokens reach XRootD as files (0600, named by their hash, removed after expiry)
named in the URL (`?xrd.ztn=`), and only for the storages listed in the config.
The XRootD client reuses a logged-in connection per user@host:port, so each token
gets its own user name: a new token is never silently replaced by an old login.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..auth.errors import AuthError, ExchangeRefused, IdPUnreachable
from ..auth.exchange import OAuthClient, Token, write_private
from .config import StorageTokensConfig
from .errors import StagingError

log = logging.getLogger(__name__)

MARGIN_SECONDS = 300.0  # an access token is renewed when it has less left than this
# Where the XRootD client looks for a token before the URL's: a stray one would be
# presented instead of the pod's (WLCG bearer token discovery).
DISCOVERY_VARIABLES = ("BEARER_TOKEN", "BEARER_TOKEN_FILE")


def ignore_ambient_tokens() -> list[str]:
    """Drop tokens the environment would hand to every XRootD connection; returns the files that remain a risk."""
    for name in DISCOVERY_VARIABLES:
        os.environ.pop(name, None)
    uid = os.geteuid()
    candidates = [f"/tmp/bt_u{uid}"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(f"{os.environ['XDG_RUNTIME_DIR']}/bt_u{uid}")
    return [path for path in candidates if os.path.exists(path)]


@dataclass(frozen=True)
class Purpose:
    """What an access token is for: its audience and scopes."""

    audience: str
    scopes: tuple[str, ...]

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


class TokenBroker:
    """The site's client of the IdP for staging: pod enrolment, renewal, and its own tokens."""

    def __init__(self, config: StorageTokensConfig, state_dir: Path, client: OAuthClient | None = None) -> None:
        self.config = config
        secret = Path(config.client_secret_file).read_text().strip()
        self.client = client or OAuthClient(config.issuer, config.client_id, secret, config.ca_file)
        self.grants_file = state_dir / "staging-grants.json"
        self.token_dir = state_dir / "staging-tokens"
        self._grants: dict[str, str] = json.loads(self.grants_file.read_text()) if self.grants_file.exists() else {}
        self._tokens: dict[tuple[str, str, str], Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.endpoints = {e.lower() for e in config.storage_endpoints}
        if config.x509_cert_dir:
            os.environ["X509_CERT_DIR"] = config.x509_cert_dir  # read by XRootD's TLS
        for path in ignore_ambient_tokens():
            log.warning("%s exists: XRootD may present it instead of a pod's token; remove it", path)

    async def close(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------------ what tokens are for

    def read(self) -> Purpose:
        return Purpose(self.config.storage_audience, tuple(self.config.read_scopes))

    def write(self, rucio_scope: str) -> Purpose:
        return Purpose(
            self.config.storage_audience, tuple(s.replace("{scope}", rucio_scope) for s in self.config.write_scopes)
        )

    def rucio(self) -> Purpose | None:
        if not self.config.rucio_audience:
            return None
        return Purpose(self.config.rucio_audience, tuple(self.config.rucio_scopes))

    # ------------------------------------------------------------------ pods

    def enrolled(self, uid: str) -> bool:
        return uid in self._grants

    async def enroll(self, uid: str, subject_token: str, output_scopes: list[str]) -> None:
        """Exchange the owner's token for a refresh token covering the pod's staging.

        Raises ExchangeRefused when the IdP will not let the owner stage this (the pod
        must be refused), IdPUnreachable when it cannot be asked.
        """
        if not self.config.exchange or uid in self._grants:
            return
        purposes = [self.read(), *(self.write(s) for s in output_scopes)]
        rucio = self.rucio()
        if rucio is not None:
            purposes.append(rucio)
        scopes = dict.fromkeys(s for p in purposes for s in p.scopes)
        scopes["offline_access"] = None
        token = await self.client.exchange(subject_token, self.config.storage_audience, " ".join(scopes))
        if not token.refresh_token:
            raise ExchangeRefused(
                f"{self.config.issuer} gave no refresh token (is offline_access allowed to {self.config.client_id}?)"
            )
        async with self._lock(uid):
            self._grants[uid] = token.refresh_token
            self._save_grants()

    def forget(self, uid: str) -> None:
        """The pod is done with staging: drop its grant and tokens."""
        self._tokens = {k: v for k, v in self._tokens.items() if k[0] != uid}
        if self._grants.pop(uid, None) is not None:
            self._save_grants()

    def keep_only(self, uids: set[str]) -> None:
        """Drop the grants of pods that no longer stage (after a restart)."""
        for uid in [u for u in self._grants if u not in uids]:
            self.forget(uid)

    async def token(self, uid: str | None, purpose: Purpose) -> str:
        """An access token for the pod (its owner's, if enrolled; else the site's own)."""
        owner = uid if uid is not None and uid in self._grants else ""
        key = (owner, purpose.audience, purpose.scope)
        async with self._lock(owner or f"site|{purpose.audience}|{purpose.scope}"):
            cached = self._tokens.get(key)
            if cached is not None and cached.valid_for(MARGIN_SECONDS):
                return cached.access_token
            try:
                token = await (
                    self._renew(owner, purpose)
                    if owner
                    else self.client.client_credentials(purpose.scope, purpose.audience)
                )
            except IdPUnreachable as exc:
                raise StagingError(f"cannot get a storage token: {exc.message}", transient=True) from exc
            except AuthError as exc:
                raise self._refused(owner, purpose, exc) from exc
            self._tokens[key] = token
            return token.access_token

    def _refused(self, owner: str, purpose: Purpose, exc: AuthError) -> StagingError:
        """An owner's refresh token the IdP no longer takes (`invalid_grant`) is TokenExpired: the
        pod cannot stage until its owner logs in again; any other refusal is about the scopes."""
        if owner and getattr(exc, "oauth_error", "") == "invalid_grant":
            return StagingError(
                f"the IdP refused the pod owner's refresh token (expired or revoked; it was "
                f"granted when the pod was created): {exc.message}; log in again and recreate the pod",
                reason="TokenExpired",
            )
        whose = "the pod owner's" if owner else f"the site's ({self.config.client_id})"
        return StagingError(
            f"the IdP refused {whose} token for {purpose.scope} (aud {purpose.audience}): {exc.message}",
            reason="TokenRefused",
        )

    async def _renew(self, uid: str, purpose: Purpose) -> Token:
        # Asking for offline_access too makes a rotating IdP hand back the next refresh token.
        token = await self.client.refresh(self._grants[uid], f"{purpose.scope} offline_access", purpose.audience)
        if token.refresh_token and token.refresh_token != self._grants[uid]:
            self._grants[uid] = token.refresh_token
            self._save_grants()
        return token

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _save_grants(self) -> None:
        write_private(self.grants_file, json.dumps(self._grants))

    # ------------------------------------------------------------------ tokens on the wire

    def token_file(self, token: str) -> Path:
        """The token in a 0600 file named by its hash (XRootD's `xrd.ztn`); expired ones are removed."""
        digest = hashlib.sha256(token.encode()).hexdigest()[:24]
        path = self.token_dir / f"{int(time.time()) + 86400}-{digest}"
        existing = next(self.token_dir.glob(f"*-{digest}"), None) if self.token_dir.exists() else None
        if existing is not None:
            return existing
        write_private(path, token)
        self._prune_files()
        return path

    def _prune_files(self) -> None:
        now = time.time()
        for path in self.token_dir.iterdir():
            expiry, _, _ = path.name.partition("-")
            if expiry.isdigit() and int(expiry) < now:
                path.unlink(missing_ok=True)

    def covers(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("root", "roots", "xroot", "xroots") and (parts.hostname or "", parts.port or 1094) in {
            _host_port(e) for e in self.endpoints
        }

    def authorize(self, url: str, token_file: Path) -> str:
        """The URL that presents the token, if it goes to one of the token storages; else unchanged."""
        if not self.covers(url):
            return url
        return with_token(url, token_file)


def with_token(url: str, token_file: Path) -> str:
    """root://host:port//path -> root://z<hash>@host:port//path?xrd.ztn=<file> (a login of its own)."""
    parts = urlsplit(url)
    user = "z" + hashlib.sha256(str(token_file).encode()).hexdigest()[:7]  # XRootD user names: 8 chars
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(q for q in (parts.query, f"xrd.ztn={token_file}") if q)
    return f"{parts.scheme}://{user}@{host}{parts.path}?{query}"


def plain(url: str) -> str:
    """A URL as people should see it: without the login name and token file."""
    if "://" not in url:
        return url  # a local path
    parts = urlsplit(url)
    query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("xrd.ztn="))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}" + (f"?{query}" if query else "")


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "1094")
    return host.strip("[]").lower(), int(port or 1094)


class PodCredentials:
    """One pod's view of the broker: URLs that carry its tokens, and its Rucio token."""

    def __init__(self, broker: TokenBroker, uid: str | None) -> None:
        self.broker = broker
        self.uid = uid

    async def reader(self) -> Callable[[str], str]:
        """A function turning a source URL into one that reads with the pod's token."""
        token_file = await asyncio.to_thread(
            self.broker.token_file, await self.broker.token(self.uid, self.broker.read())
        )
        return lambda url: self.broker.authorize(url, token_file)

    async def writer(self, rucio_scope: str) -> Callable[[str], str]:
        token = await self.broker.token(self.uid, self.broker.write(rucio_scope))
        token_file = await asyncio.to_thread(self.broker.token_file, token)
        return lambda url: self.broker.authorize(url, token_file)

    async def rucio_token(self) -> str | None:
        purpose = self.broker.rucio()
        return None if purpose is None else await self.broker.token(self.uid, purpose)
