"""Validating WLCG/IAM access tokens: signature through the issuer's JWKS, claims, profile.

The issuer must be on the allowlist *before* anything is fetched (the token names
its issuer; we never follow a URL from a token we have not checked). The JWKS
location comes from the issuer's discovery document, never from the token. Keys
are cached per issuer, refreshed when stale, and re-fetched when a token names an
unknown `kid` — at most once per cooldown, so forged kids cannot hammer the IdP. When
the IdP is down, validations share one fetch, back off between tries, and use the last
keys for a grace period (interlink_provider.auth.keystate).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
from pydantic import BaseModel, ConfigDict, Field

from ..telemetry.metrics import TOKEN_FAILURES
from . import errors
from .identity import Identity
from .jwtparse import read_unverified
from .keystate import FIRST_RETRY_SECONDS, IssuerKeys, Timing
from .profile import check_wlcg
from .scopes import parse_scopes
from .tokenkind import check_access_token

log = logging.getLogger(__name__)

WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti"]
# Set (true) in every token of `interlink-provider devidp`, the test IdP: such tokens are
# refused unless their issuer's entry says `development: true`, so a test IdP's tokens
# never open a production site, whatever its issuer URL.
DEVELOPMENT_CLAIM = "ilp_dev"


class TrustedIssuer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="the `iss` value, exactly as the IdP writes it")
    ca_file: str | None = Field(None, description="CA bundle to trust for this IdP's HTTPS")
    development: bool = Field(
        False,
        description=f"accept this issuer's development tokens (claim `{DEVELOPMENT_CLAIM}`, set by "
        "`interlink-provider devidp`): for test and demo sites only; false: they are refused",
    )
    require_wlcg_profile: bool | None = Field(
        None,
        description="hold this issuer's tokens to the WLCG profile (`wlcg.ver`, storage scopes with a path): false "
        "for a conformant OIDC IdP that is not a WLCG one; unset: as `auth.token.require_wlcg_profile`",
    )


class ValidationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[TrustedIssuer] = Field(
        default_factory=list, description="the IdPs whose tokens are accepted; tokens of any other are refused"
    )
    audiences: list[str] = Field(default_factory=list, description="`aud` values that mean us")
    accept_any_audience: bool = Field(False, description=f"also accept {WLCG_ANY_AUDIENCE}")
    leeway_seconds: float = Field(60, ge=0, description="clock skew tolerated when checking `exp`, `nbf` and `iat`")
    max_token_lifetime_seconds: float = Field(
        86400,
        gt=0,
        description="tokens issued for longer (`exp` - `iat`) are refused: IAM's access tokens live 1 h, the WLCG "
        "profile's default maximum is 6 h; raise it for long-lived tokens a risk assessment allows (pilots)",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
        description="signature algorithms accepted (the token header's `alg`)",
    )
    jwks_max_age_seconds: float = Field(3600, gt=0, description="keys are re-fetched when older")
    jwks_cooldown_seconds: float = Field(30, ge=0, description="least time between forced re-fetches")
    jwks_grace_seconds: float = Field(
        86400,
        ge=0,
        description="while an issuer's keys cannot be re-fetched (its IdP is down), its last keys stay in use "
        "this long past `jwks_max_age_seconds`; then its tokens get `idp_unreachable` until it answers",
    )
    jwks_retry_max_seconds: float = Field(
        60,
        gt=0,
        description=f"after a failed key fetch the next waits {FIRST_RETRY_SECONDS:.0f} s, doubling after each "
        "further failure up to this; validations meanwhile use the keys at hand",
    )
    require_wlcg_profile: bool = Field(
        True,
        description="tokens must follow the WLCG profile (`wlcg.ver` present, as `1.<minor>`; storage scopes with "
        "a path), unless their issuer's entry says otherwise",
    )
    http_timeout_seconds: float = Field(
        10, gt=0, description="seconds per request to an IdP (discovery document, JWKS)"
    )


def ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


async def fetch_json(session: aiohttp.ClientSession, url: str, ca_file: str | None, timeout: float) -> Any:
    try:
        async with session.get(
            url, ssl=ssl_context(ca_file) or True, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status != 200:
                raise errors.IdPUnreachable(f"{url} answered HTTP {response.status}")
            return await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        raise errors.IdPUnreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc


class LazySession:
    """An aiohttp session opened on first use (constructors may run outside an event loop)."""

    _session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class KeyCache(LazySession):
    """JWKS per trusted issuer, found through discovery.

    Validations that need a fetch share one: they queue on the issuer's lock, and the fetch the
    first one makes (or its failure, then the back-off) decides for the others. While an IdP is
    down, its last keys stay in use for `jwks_grace_seconds` past their maximum age.
    """

    def __init__(self, config: ValidationConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.trusted = {i.issuer: i for i in config.issuers}
        self.timing = Timing(
            max_age=config.jwks_max_age_seconds,
            cooldown=config.jwks_cooldown_seconds,
            grace=config.jwks_grace_seconds,
            retry_max=config.jwks_retry_max_seconds,
        )
        self.clock = clock  # monotonic seconds; a test gives its own
        self._keys: dict[str, IssuerKeys] = {}
        self.fetches = 0  # how many JWKS downloads (for tests and benchmarks)

    def state(self) -> dict[str, tuple[bool, str]]:
        """Per trusted issuer, what the last key fetch says (for status pages, no call made)."""
        now = self.clock()
        states = {}
        for issuer in self.trusted:
            entry = self._keys.get(issuer)
            if entry is None or (entry.fetched_at is None and entry.error is None):
                states[issuer] = (True, "keys not fetched yet (fetched at the first token)")
            elif entry.error is not None:
                kept = f"; keys fetched {entry.age(now):.0f} s ago in use" if entry.usable(now, self.timing) else ""
                states[issuer] = (False, entry.error + kept)
            else:
                states[issuer] = (True, f"{len(entry.keys)} keys, fetched {entry.age(now):.0f} s ago")
        return states

    async def _fetch(self, issuer: str) -> dict[str, jwt.PyJWK]:
        trusted = self.trusted[issuer]
        timeout = self.config.http_timeout_seconds
        meta = await fetch_json(self.session(), discovery_url(issuer), trusted.ca_file, timeout)
        jwks_uri = meta.get("jwks_uri") if isinstance(meta, dict) else None
        if not jwks_uri:
            raise errors.IdPUnreachable(f"{issuer} publishes no jwks_uri")
        document = await fetch_json(self.session(), jwks_uri, trusted.ca_file, timeout)
        self.fetches += 1
        if not isinstance(document, dict):
            raise errors.IdPUnreachable(f"{jwks_uri} is not a JWK set")
        keys: dict[str, jwt.PyJWK] = {}
        for data in document.get("keys", []):
            kid = data.get("kid") if isinstance(data, dict) else None
            if not kid or data.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key type we cannot use; the others still count
        return keys

    async def key(self, issuer: str, kid: str) -> jwt.PyJWK:
        entry = self._keys.setdefault(issuer, IssuerKeys())
        if kid in entry.keys and entry.fresh(self.clock(), self.timing):
            return entry.keys[kid]
        async with entry.lock:
            now = self.clock()
            if entry.due(kid, now, self.timing):
                await self._refresh(issuer, entry, now)
            return self._pick(issuer, entry, kid, self.clock())

    async def _refresh(self, issuer: str, entry: IssuerKeys, now: float) -> None:
        forced = entry.fresh(now, self.timing)  # fresh keys fetched again: for an unknown kid
        try:
            keys = await self._fetch(issuer)
        except errors.AuthError as exc:
            if entry.failed(exc.message, now, self.timing):
                log.warning(
                    "cannot refresh the signing keys of %s: %s; %s", issuer, exc.message, self._fallback(entry, now)
                )
            else:
                log.debug("still cannot refresh the signing keys of %s: %s", issuer, exc.message)
            return
        ended = entry.fetched(keys, now, forced)
        if ended:
            log.info("the signing keys of %s are fetched again, after %d failed tries", issuer, ended)

    def _fallback(self, entry: IssuerKeys, now: float) -> str:
        """What validations do while an issuer's keys cannot be fetched (for the warning)."""
        retry = f"next try in {entry.retry_in(now):.0f} s, then with back-off up to {self.timing.retry_max:.0f} s"
        if not entry.usable(now, self.timing):
            return f"its tokens cannot be checked until it answers ({retry})"
        left = self.timing.max_age + self.timing.grace - entry.age(now)
        return (
            f"its last keys (fetched {entry.age(now):.0f} s ago) stay in use for {left:.0f} s more "
            f"(auth.token.jwks_max_age_seconds + jwks_grace_seconds); {retry}"
        )

    def _pick(self, issuer: str, entry: IssuerKeys, kid: str, now: float) -> jwt.PyJWK:
        if not entry.usable(now, self.timing):
            raise errors.IdPUnreachable(self._why_unusable(issuer, entry, now))
        if kid in entry.keys:
            return entry.keys[kid]
        if entry.error is not None:  # it may be a new key we cannot ask for now
            raise errors.IdPUnreachable(
                f"{issuer} has no signing key {kid!r} among the keys we have, and cannot be asked for "
                f"new ones: {entry.error}"
            )
        raise errors.BadSignature(f"{issuer} has no signing key {kid!r}")

    def _why_unusable(self, issuer: str, entry: IssuerKeys, now: float) -> str:
        why = entry.error or "no keys"
        retry = f"next try in {entry.retry_in(now):.0f} s"
        if entry.fetched_at is None:
            return f"cannot get the signing keys of {issuer}: {why}; {retry}"
        return (
            f"the signing keys of {issuer} are {entry.age(now):.0f} s old, past the "
            f"{self.timing.max_age + self.timing.grace:.0f} s that jwks_max_age_seconds + jwks_grace_seconds "
            f"allow, and cannot be refreshed: {why}; {retry}"
        )


class TokenValidator:
    def __init__(self, config: ValidationConfig) -> None:
        self.config = config
        self.keys = KeyCache(config)

    async def close(self) -> None:
        await self.keys.close()

    def audiences(self) -> list[str]:
        return [*self.config.audiences, *([WLCG_ANY_AUDIENCE] if self.config.accept_any_audience else [])]

    async def validate(self, token: str) -> Identity:
        """The token's identity, or an AuthError naming why not (counted by that reason)."""
        try:
            return await self._validate(token.strip())
        except errors.AuthError as exc:
            TOKEN_FAILURES.labels(type(exc).__name__).inc()
            raise

    async def _validate(self, token: str) -> Identity:
        unverified = read_unverified(token)
        issuer = unverified.claims.get("iss")
        if not isinstance(issuer, str) or issuer not in self.keys.trusted:
            raise errors.UnknownIssuer(self._untrusted(issuer))
        kid = unverified.header.get("kid")
        if not kid or not isinstance(kid, str):
            raise errors.MalformedToken("the token header has no `kid` (required by the WLCG profile)")
        if unverified.header.get("alg") not in self.config.algorithms:
            raise errors.BadSignature(f"algorithm {unverified.header.get('alg')!r} is not accepted")
        key = await self.keys.key(issuer, kid)
        claims = self._decode(token, key, issuer)
        check_access_token(unverified.header, claims)
        self._check_lifetime(claims)
        self._check_profile(claims, issuer)
        self._check_development(claims, issuer)
        return self._identity(claims)

    def _untrusted(self, issuer: object) -> str:
        """Why an issuer is refused, naming a trusted one it misses by a trailing slash: OIDC compares
        issuers exactly, so we do not accept it, but `https://iam.example.org` for `.../` is a typo to point at."""
        shown = repr(issuer[:256]) if isinstance(issuer, str) else repr(issuer)[:256]  # a token's text, bounded
        refusal = f"issuer {shown} is not trusted here"
        if isinstance(issuer, str):
            for trusted in self.keys.trusted:
                if issuer + "/" == trusted or trusted + "/" == issuer:
                    return (
                        f"{refusal}: the trusted issuer {trusted!r} differs only by a trailing '/'; issuers are "
                        "compared exactly (OIDC), so its entry in auth.token.issuers must read as the tokens' `iss` "
                        "(the IdP's discovery document names it as `issuer`)"
                    )
        return refusal

    def _decode(self, token: str, key: jwt.PyJWK, issuer: str) -> dict[str, Any]:
        audiences = self.audiences()
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=self.config.algorithms,
                audience=audiences or None,
                issuer=issuer,
                leeway=self.config.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_aud": bool(audiences)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.Expired(f"the token expired ({exc})") from exc
        except jwt.ImmatureSignatureError as exc:
            raise errors.NotYetValid(f"the token is not valid yet ({exc})") from exc
        except jwt.InvalidAudienceError as exc:
            raise errors.WrongAudience(f"the token is not for this service: {exc}; accepted: {audiences}") from exc
        except jwt.InvalidSignatureError as exc:
            raise errors.BadSignature("the signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise errors.ProfileViolation(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise errors.MalformedToken(str(exc)) from exc

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """A bound on how long a token may live, whatever its issuer wrote (exp and iat are checked numbers)."""
        lifetime = float(claims["exp"]) - float(claims["iat"])
        limit = self.config.max_token_lifetime_seconds
        if lifetime > limit:
            raise errors.LifetimeTooLong(
                f"the token was issued for {lifetime / 3600:.1f} h (exp - iat); this site accepts at most "
                f"{limit / 3600:g} h (auth.token.max_token_lifetime_seconds)"
            )

    def _check_profile(self, claims: dict[str, Any], issuer: str) -> None:
        required = self.keys.trusted[issuer].require_wlcg_profile
        if self.config.require_wlcg_profile if required is None else required:
            check_wlcg(claims)

    def _check_development(self, claims: dict[str, Any], issuer: str) -> None:
        """A development token (a devidp's) only where its issuer is marked `development: true`."""
        if claims.get(DEVELOPMENT_CLAIM) in (None, False) or self.keys.trusted[issuer].development:
            return
        raise errors.DevelopmentToken(
            f"a development token (claim `{DEVELOPMENT_CLAIM}`, issued by a devidp test IdP) is refused: "
            f"the trusted issuer {issuer} is not marked `development: true`"
        )

    @staticmethod
    def _identity(claims: dict[str, Any]) -> Identity:
        audience = claims.get("aud") or []
        groups = claims.get("wlcg.groups") or claims.get("groups") or []
        act = claims.get("act") or {}
        return Identity(
            issuer=claims["iss"],
            subject=str(claims["sub"]),
            scopes=tuple(parse_scopes(claims.get("scope"))),
            groups=tuple(str(g) for g in (groups if isinstance(groups, list) else [groups])),
            audiences=tuple(audience if isinstance(audience, list) else [audience]),
            client_id=str(claims.get("client_id", "")),
            actor=str(act.get("sub", "")) if isinstance(act, dict) else "",
            expires_at=float(claims.get("exp", 0)),
            claims=claims,
        )
