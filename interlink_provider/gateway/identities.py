"""Pods that run under their owner's own identity at the site.

In a namespace configured `user`, a pod names (annotation, default
`interlink.provider/identity-secret`) a Secret holding its owner's token from
the IdP: an access token, or a refresh token with the public client it belongs to
(what `interlink-provider token login` writes). The Virtual Kubelet sends that
Secret along because the pod references it in a volume.

The gateway takes the Secret out of what it forwards (the Secret, the volumes and
mounts using it, env taken from it): the user's credential never reaches the site.
It then exchanges (RFC 8693) the user's token with its own client, asking
offline_access: the IdP answers with a *grant* the gateway keeps (a refresh token,
`sub` = the user, `act` = the gateway), from which it draws short tokens narrowed
to each site's audience for every call about the pod, for as long as the pod
lives. Grants are keyed by the Secret's token, so many pods of one Secret share
one grant (and one refresh, which matters where the IdP rotates refresh tokens).
An IdP may give no refresh token on exchange (RFC 8693 makes it optional): the
grant then keeps the owner's token and exchanges it again per audience until it
expires, and says then what the IdP must allow.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from ..auth import errors
from ..auth.exchange import OAuthClient, Token, write_private
from ..refusals import Forbidden, Invalid

log = logging.getLogger(__name__)
RENEW_MARGIN = 60.0
SECRET_KEYS = ("access_token", "refresh_token", "client_id", "issuer")


class IdentityProblem(Exception):
    """The pod cannot run as its owner. The message (which the VK shows on the pod) starts with a
    reason word when one applies (`TokenExpired: ...`); the subclass says whose fault it is, and so
    the HTTP status the VK gets (`.status`, from interlink_provider.refusals)."""

    def __init__(self, message: str, reason: str = "") -> None:
        message = f"{reason}: {message}" if reason else message
        super().__init__(message)
        self.reason = reason
        self.message = message


class IdentityUnusable(IdentityProblem, Invalid):
    """The pod names no identity Secret, or one that was not sent or holds no usable token (422)."""


class IdentityRefused(IdentityProblem, Forbidden):
    """The owner's token is expired, from another IdP, or refused by the IdP (403)."""


@dataclass(frozen=True)
class UserCredential:
    """What an identity Secret holds."""

    source: str  # namespace/name, for messages
    access_token: str | None = None
    refresh_token: str | None = None
    client_id: str | None = None  # the public client the refresh token was issued to
    issuer: str | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256((self.refresh_token or self.access_token or "").encode()).hexdigest()[:32]


# ---------------------------------------------------------------------- the Secret


def _secret_values(secret: dict[str, Any], source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(encoded), validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise IdentityUnusable(
                f"Secret {source}: key {key!r} is not base64 UTF-8 text", "IdentitySecretInvalid"
            ) from exc
    for key, text in (secret.get("stringData") or {}).items():
        values[key] = str(text).strip()
    return values


def take_identity(request: dict[str, Any], secret_name: str) -> UserCredential:
    """The user's credential from the PodCreateRequests, removed from it (in place) with every use of it."""
    pod = request["pod"]
    namespace = pod.get("metadata", {}).get("namespace", "")
    source = f"{namespace}/{secret_name}"
    secrets = request.get("secrets") or []
    mine = [s for s in secrets if (s.get("metadata") or {}).get("name") == secret_name]
    if not mine:
        raise IdentityUnusable(
            f"identity Secret {source} was not sent with the pod: reference it in a "
            f"volume (`secret: {{secretName: {secret_name}}}`) so the Virtual Kubelet sends it",
            "IdentityMissing",
        )
    request["secrets"] = [s for s in secrets if s not in mine]
    _strip_uses(request, secret_name)
    values = _secret_values(mine[0], source)
    credential = UserCredential(source, *(values.get(key) or None for key in SECRET_KEYS))
    if not credential.access_token and not credential.refresh_token:
        raise IdentityUnusable(
            f"identity Secret {source} has neither `access_token` nor `refresh_token`", "IdentitySecretInvalid"
        )
    if credential.refresh_token and not credential.access_token and not credential.client_id:
        raise IdentityUnusable(
            f"identity Secret {source}: a `refresh_token` needs the `client_id` it was "
            "issued to (`interlink-provider token login` writes both)",
            "IdentitySecretInvalid",
        )
    return credential


def _strip_uses(request: dict[str, Any], secret_name: str) -> None:
    """Volumes, projected sources, mounts and env that would carry the Secret to the site."""
    spec = request["pod"].setdefault("spec", {})
    removed: set[str] = set()
    kept = []
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret_name or any(
            (source.get("secret") or {}).get("name") == secret_name
            for source in (volume.get("projected") or {}).get("sources") or []
        ):
            removed.add(volume.get("name", ""))
        else:
            kept.append(volume)
    spec["volumes"] = kept
    request["projectedvolumesmaps"] = [
        m for m in request.get("projectedvolumesmaps") or [] if (m.get("metadata") or {}).get("name") not in removed
    ]
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        container["volumeMounts"] = [m for m in container.get("volumeMounts") or [] if m.get("name") not in removed]
        container["env"] = [
            e
            for e in container.get("env") or []
            if ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") != secret_name
        ]
        container["envFrom"] = [
            e for e in container.get("envFrom") or [] if (e.get("secretRef") or {}).get("name") != secret_name
        ]


# ---------------------------------------------------------------------- grants


@dataclass
class Grant:
    subject: str
    refresh_token: str | None
    last_used: float = field(default_factory=time.time)
    # Where the IdP gives no refresh token on exchange (RFC 8693 makes it optional): the owner's
    # token the grant was made from, exchanged again for each audience until it expires.
    subject_token: str | None = None
    access: dict[str, Token] = field(default_factory=dict, repr=False)  # per audience, memory only


class UserGrants:
    """Users' delegated grants, and which grant each pod runs under."""

    def __init__(self, client: OAuthClient, scope: str, path: str | None, idle_days: float = 30) -> None:
        self.client = client  # the gateway's own confidential client: the actor
        self.scope = " ".join(dict.fromkeys([*scope.split(), "offline_access"]))
        self.path = Path(path) if path else None
        self.idle_seconds = idle_days * 86400
        self.grants: dict[str, Grant] = {}
        self.pods: dict[str, str] = {}  # pod UID -> grant key
        self._locks: dict[str, asyncio.Lock] = {}
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        data = json.loads(self.path.read_text())
        self.grants = {
            k: Grant(v["subject"], v.get("refresh_token"), v.get("last_used", time.time()), v.get("subject_token"))
            for k, v in data.get("grants", {}).items()
        }
        self.pods = {uid: key for uid, key in data.get("pods", {}).items() if key in self.grants}

    def _save(self) -> None:
        if self.path is None:
            return
        grants = {
            k: {key: value for key, value in asdict(g).items() if key != "access"} for k, g in self.grants.items()
        }
        write_private(self.path, json.dumps({"grants": grants, "pods": self.pods}))

    def runs_as_user(self, uid: str) -> bool:
        return uid in self.pods

    async def enroll(self, uid: str, credential: UserCredential, audience: str) -> str:
        """The pod's token for `audience`, as its owner: from the grant of this credential (made now if new)."""
        key = hashlib.sha256(f"{credential.fingerprint} {self.scope}".encode()).hexdigest()[:32]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self.grants:
                self.grants[key] = await self._delegate(credential)
                log.info("user grant for %s (from %s)", self.grants[key].subject, credential.source)
            self.pods[uid] = key
            self._prune()
            self._save()
        try:
            return await self._token(key, audience)
        except IdentityProblem:
            self.forget(uid)
            raise

    async def token_for(self, uid: str, audience: str) -> str | None:
        """The pod's owner's token for `audience`; None for pods under the service identity."""
        key = self.pods.get(uid)
        return None if key is None else await self._token(key, audience)

    def forget(self, uid: str) -> None:
        if self.pods.pop(uid, None) is not None:
            self._save()

    async def _delegate(self, credential: UserCredential) -> Grant:
        if credential.issuer and credential.issuer.rstrip("/") != self.client.issuer.rstrip("/"):
            raise IdentityRefused(
                f"identity Secret {credential.source} is from {credential.issuer}; this "
                f"gateway exchanges tokens of {self.client.issuer} only",
            )
        subject_token = credential.access_token
        if credential.refresh_token:
            subject_token = await self._redeem(credential)
        assert subject_token is not None
        _refuse_expired(subject_token, credential.source)
        try:
            token = await self.client.exchange(subject_token, None, self.scope)
        except errors.AuthError as exc:
            raise IdentityRefused(
                f"the IdP refused to let the gateway act for the owner of {credential.source}: {exc.message}",
                "TokenExchangeRefused",
            ) from exc
        subject = str(_claims(token.access_token).get("sub", "?"))
        if token.refresh_token is None:
            log.info("no refresh token for %s from the IdP: its token is exchanged again until it expires", subject)
            return Grant(subject, None, subject_token=subject_token)
        return Grant(subject, token.refresh_token)

    async def _redeem(self, credential: UserCredential) -> str:
        """The user's refresh token -> their access token (as the public client it was issued to)."""
        user_client = OAuthClient(self.client.issuer, credential.client_id or "", None, self.client.ca_file)
        try:
            return (await user_client.refresh(credential.refresh_token or "")).access_token
        except errors.AuthError as exc:
            if credential.access_token:
                return credential.access_token
            raise IdentityRefused(
                f"the refresh token in {credential.source} was refused (expired or "
                f"revoked? run `interlink-provider token login` again): {exc.message}",
                "TokenExpired",
            ) from exc
        finally:
            await user_client.close()

    async def _token(self, key: str, audience: str) -> str:
        async with self._locks.setdefault(key, asyncio.Lock()):
            grant = self.grants.get(key)
            if grant is None:
                raise IdentityRefused("the owner's grant is gone (refused earlier); recreate the pod", "TokenExpired")
            grant.last_used = time.time()
            cached = grant.access.get(audience)
            if cached is not None and cached.valid_for(RENEW_MARGIN):
                return cached.access_token
            if not grant.refresh_token:
                token = await self._exchanged_again(grant, audience)
                grant.access[audience] = token
                return token.access_token
            try:
                token = await self.client.refresh(grant.refresh_token, audience=audience)
            except errors.ExchangeRefused as exc:
                self.grants.pop(key, None)
                self._save()
                raise IdentityRefused(
                    f"the refresh token for identity {grant.subject} was refused "
                    f"(expired or revoked): {exc.message}; log in again and recreate "
                    "the pod",
                    "TokenExpired",
                ) from exc
            if token.refresh_token != grant.refresh_token:
                grant.refresh_token = token.refresh_token
                self._save()  # a rotated refresh token must survive a restart
            grant.access[audience] = token
            return token.access_token

    async def _exchanged_again(self, grant: Grant, audience: str) -> Token:
        """A token for `audience` from the owner's own token, while it lasts (no refresh token)."""
        expires = _claims(grant.subject_token or "").get("exp")
        if not grant.subject_token or not isinstance(expires, int | float) or expires <= time.time() + 30:
            raise IdentityRefused(
                f"the IdP gives no refresh token on token exchange and the token of {grant.subject} the pod was "
                f"created with has expired: to act on pods past their owner's token, the IdP must issue refresh "
                f"tokens on exchange to the client {self.client.client_id} (grant it offline_access); else "
                "recreate the pod with a fresh token",
                "TokenExpired",
            )
        try:
            return await self.client.exchange(grant.subject_token, audience, self.scope)
        except errors.AuthError as exc:
            raise IdentityRefused(
                f"the IdP refused to exchange the token of {grant.subject} again: {exc.message}",
                "TokenExchangeRefused",
            ) from exc

    def _prune(self) -> None:
        used = set(self.pods.values())
        idle = [k for k, g in self.grants.items() if k not in used and time.time() - g.last_used > self.idle_seconds]
        for key in idle:
            del self.grants[key]


def _claims(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}  # opaque tokens: the IdP will judge them


def _refuse_expired(token: str, source: str) -> None:
    """A clear message before the IdP's: which Secret, expired when."""
    expires = _claims(token).get("exp")
    if isinstance(expires, (int, float)) and expires <= time.time():
        ago = int(time.time() - expires)
        when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise IdentityRefused(
            f"the token in identity Secret {source} expired at {when} ({ago} s ago): "
            "run `interlink-provider token login` again and update the Secret",
            "TokenExpired",
        )
