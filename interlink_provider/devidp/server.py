"""The devidp's OAuth 2.0 server: authlib's framework-neutral server on aiohttp.

authlib implements client authentication, client credentials, refresh tokens and
the device flow; RFC 8693 token exchange is ours (authlib has none), with IAM's
semantics: scope required, audience from `resource`/`aud`/`audience`,
`actor_token` refused ("Delegation not supported"), an `act` claim naming the
actor (nested on chained exchanges), `offline_access` giving the *actor* a refresh
token (refused when actor and subject are the same client), and exchange policies.
"""

from __future__ import annotations

import contextvars
import hmac
import html
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import jwt
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant, DeviceCredentialDict
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from interlink_provider.auth.scopes import Scope
from interlink_provider.auth.validate import DEVELOPMENT_CLAIM

from . import policy
from .config import ClientConfig, IdPConfig
from .keys import KeyRing, new_jti
from .registry import RegistryRefusal, RegistryTokens

# The development IdP's own metric (not charted: a real site runs IAM, with its own metrics).
ISSUED = Counter(
    "ilp_devidp_token_responses_total", "Token endpoint answers, by grant and outcome", ["grant", "outcome"]
)

log = logging.getLogger(__name__)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
# Compared with the password given for an unknown user, so that the answer takes as long as for a known one.
_NO_SUCH_USER = secrets.token_bytes(32)

# authlib carries no types: its classes are Any to mypy, and each subclass below says so.
# What it hands back from our own hooks is typed where it comes back (cast, with the hook named).

# The token generator cannot see the request: the handler puts the asked audience here.
_requested_audience: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("audience", default=None)
# ...and, on a refresh, the refresh token being used: the next one keeps its scope and
# audience (RFC 6749 6: a narrowed access token does not narrow the refresh token).
_refreshing: contextvars.ContextVar[RefreshRecord | None] = contextvars.ContextVar("refreshing", default=None)

# An endpoint's answer, as authlib passes it to handle_response(): status, JSON body, headers.
OAuthAnswer = tuple[int, Mapping[str, Any], list[tuple[str, str]]]


class TokenResponse(TypedDict, total=False):
    """The token endpoint's JSON (RFC 6749 5.1; issued_token_type: RFC 8693 2.2.1)."""

    token_type: str
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str
    issued_token_type: str


@dataclass
class Principal:
    """Whom a token speaks for."""

    sub: str
    groups: list[str] = field(default_factory=list)
    act: dict[str, Any] | None = None
    audience: list[str] | None = None


class Client(ClientMixin):  # type: ignore[misc]  # authlib carries no types
    def __init__(self, client_id: str, config: ClientConfig) -> None:
        self.client_id = client_id
        self.config = config

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return ""

    def allows(self, scope: str) -> bool:
        wanted = Scope.parse(scope)
        return any(Scope.parse(allowed).covers(wanted) for allowed in self.config.scopes)

    def get_allowed_scope(self, scope: str | None) -> str:
        requested = scope_to_list(scope) or []
        refused = [s for s in requested if not self.allows(s)]
        if refused:
            raise InvalidScopeError(f"scope {' '.join(refused)} is not allowed for client {self.client_id}")
        return cast(str, list_to_scope(requested))  # authlib: a list's scope is its words, space-joined

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        secret = self.config.secret
        if not secret:  # a public client has none to check
            return False
        return hmac.compare_digest(secret, client_secret or "")

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.config.secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.config.grant_types


@dataclass
class RefreshRecord(TokenMixin):  # type: ignore[misc]  # authlib carries no types
    token: str
    client_id: str
    principal: Principal
    scope: str
    expires_at: float
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked


class AioPayload(OAuth2Payload):  # type: ignore[misc]  # authlib carries no types
    def __init__(self, form: dict[str, str]) -> None:
        self._data = form

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return {k: [v] for k, v in self._data.items()}


class AioRequest(OAuth2Request):  # type: ignore[misc]  # authlib carries no types
    def __init__(self, method: str, uri: str, headers: dict[str, str], form: dict[str, str]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.payload = AioPayload(form)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


# --------------------------------------------------------------------------- grants


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]  # authlib carries no types
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]  # authlib carries no types
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: DevIdP  # set by authlib's BaseGrant

    def issue_token(self, user: Principal, refresh_token: RefreshRecord) -> TokenResponse:
        marker = _refreshing.set(refresh_token)
        try:
            return cast(TokenResponse, super().issue_token(user, refresh_token))  # what generate() made
        finally:
            _refreshing.reset(marker)

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        record = self.server.refresh_tokens.get(refresh_token)
        if record is None or record.is_expired() or record.is_revoked():
            return None
        return record

    def authenticate_user(self, credential: RefreshRecord) -> Principal:
        return credential.principal

    def revoke_old_credential(self, credential: RefreshRecord) -> None:
        if self.server.config.rotate_refresh_tokens:
            credential.revoked = True
            self.server.refresh_tokens.pop(credential.token, None)


class DeviceGrant(DeviceCodeGrant):  # type: ignore[misc]  # authlib carries no types
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    server: DevIdP  # set by authlib's BaseGrant

    def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
        self.server.purge_device_codes()
        return self.server.device_codes.get(device_code)

    def query_user_grant(self, user_code: str) -> tuple[Principal, bool] | None:
        return self.server.user_grants.get(user_code)

    def should_slow_down(self, credential: DeviceCredentialDict) -> bool:
        return False

    def create_token_response(self) -> OAuthAnswer:
        answer = cast(OAuthAnswer, super().create_token_response())  # authlib's own answer
        # A device code gives one token response (RFC 8628 3.5: the device stops polling then).
        self.server.forget_device_code(self.request.credential)
        return answer


class DeviceEndpoint(DeviceAuthorizationEndpoint):  # type: ignore[misc]  # authlib carries no types
    ENDPOINT_NAME = "device_authorization"
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    server: DevIdP  # set by authlib's DeviceAuthorizationEndpoint

    def get_verification_uri(self) -> str:
        return self.server.issuer + "device"

    def create_endpoint_response(self, request: AioRequest) -> OAuthAnswer:
        client = self.authenticate_client(request)
        client.get_allowed_scope(request.payload.scope)  # refuses scopes the client may not ask
        # Announce what this IdP does (authlib's class defaults say 1800 s and 5 s).
        self.EXPIRES_IN = self.server.config.device_code_lifetime
        self.INTERVAL = self.server.config.device_poll_interval
        return cast(OAuthAnswer, super().create_endpoint_response(request))  # authlib's own answer

    def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
        self.server.purge_device_codes()
        self.server.device_codes[data["device_code"]] = DeviceCredentialDict(
            device_code=data["device_code"],
            client_id=client_id,
            scope=scope,
            user_code=data["user_code"],
            expires_at=time.time() + self.server.config.device_code_lifetime,
        )


class SameClientOfflineAccess(OAuth2Error):  # type: ignore[misc]  # authlib carries no types
    error = "invalid_request"
    status_code = 403


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):  # type: ignore[misc]  # authlib carries no types
    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: DevIdP  # set by authlib's BaseGrant

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise InvalidClientError(status_code=401, description="Unauthorized grant type")
        data = self.request.payload.data
        if data.get("actor_token") or data.get("want_composite"):
            raise InvalidRequestError("Delegation not supported")
        subject_token = data.get("subject_token")
        if not subject_token:
            raise InvalidRequestError("subject_token is required")
        try:
            subject = self.server.keys.verify(subject_token, self.server.issuer)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid subject token: {exc}") from exc
        scope = data.get("scope")
        if not scope:
            raise InvalidRequestError("The scope parameter is required for a token exchange request!")
        scope = client.get_allowed_scope(scope)
        origin_id = str(subject.get("client_id", ""))
        origin = self.server.clients.get(origin_id)
        requested = scope_to_list(scope)
        refused = policy.decide(
            self.server.config.exchange_policies,
            (origin_id, origin.config.scopes if origin else []),
            (client.client_id, client.config.scopes),
            requested,
        )
        if refused:
            raise InvalidScopeError(refused)
        if "offline_access" in requested and origin_id == client.client_id:
            raise SameClientOfflineAccess(
                description="actor and the subject are the same client and offline_access is in the requested scopes"
            )
        act = {"sub": client.client_id}
        if isinstance(subject.get("act"), dict):
            act["act"] = subject["act"]
        groups = subject.get("wlcg.groups") or []
        self.request.client = client
        self.request.user = Principal(sub=str(subject["sub"]), groups=list(groups), act=act)
        self.request.exchange_scope = scope

    def create_token_response(self) -> OAuthAnswer:
        token: TokenResponse = self.generate_token(
            user=self.request.user,
            scope=self.request.exchange_scope,
            include_refresh_token=self.request.client.check_grant_type("refresh_token"),
        )
        token["issued_token_type"] = JWT_TOKEN_TYPE
        return 200, token, self.TOKEN_RESPONSE_HEADER


# --------------------------------------------------------------------------- server


class DevIdP(AuthorizationServer):  # type: ignore[misc]  # authlib carries no types
    def __init__(self, config: IdPConfig) -> None:
        super().__init__()
        self.config = config
        self.issuer = config.issuer_url()
        self.state_dir = Path(config.state_dir)
        self.keys = KeyRing(self.state_dir)
        self.registry = RegistryTokens(config, self.issuer, config.registry) if config.registry else None
        self.clients = {cid: Client(cid, c) for cid, c in config.clients.items()}
        self.refresh_tokens: dict[str, RefreshRecord] = {}
        self.device_codes: dict[str, DeviceCredentialDict] = {}
        self.user_grants: dict[str, tuple[Principal, bool]] = {}
        self.issued = 0
        self.register_token_generator("default", self.generate)
        for grant in (ClientCredentialsGrant, RefreshTokenGrant, DeviceGrant, TokenExchangeGrant):
            self.register_grant(grant)
        self.register_endpoint(DeviceEndpoint)

    # authlib hooks
    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # refresh tokens are recorded when generated

    def create_oauth2_request(self, request: AioRequest) -> AioRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_response(self, status: int, body: Mapping[str, Any], headers: list[tuple[str, str]]) -> OAuthAnswer:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    # tokens
    def generate(
        self,
        grant_type: str,
        client: Client,
        user: Principal | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> TokenResponse:
        principal = user or Principal(sub=client.client_id, groups=list(client.config.groups))
        audience = _requested_audience.get() or principal.audience or [ANY_AUDIENCE]
        scopes = scope_to_list(client.get_allowed_scope(scope)) or []  # refuses what the client may not ask
        now = int(time.time())
        lifetime = expires_in or self.config.access_token_lifetime
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.sub,
            "aud": audience if len(audience) > 1 else audience[0],
            "iat": now,
            "nbf": now - 60,  # backdated, as the WLCG profile recommends
            "exp": now + lifetime,
            "jti": new_jti(),
            "client_id": client.client_id,
            "scope": " ".join(scopes),
            "wlcg.ver": "1.0",
            DEVELOPMENT_CLAIM: True,  # a test IdP's token: refused where the issuer is not marked development
        }
        if any(s == "wlcg.groups" or s.startswith("wlcg.groups:") for s in scopes):
            claims["wlcg.groups"] = principal.groups
        if principal.act:
            claims["act"] = principal.act
        self.issued += 1
        token = TokenResponse(
            token_type="Bearer", access_token=self.keys.sign(claims), expires_in=lifetime, scope=" ".join(scopes)
        )
        origin = _refreshing.get()
        kept_scope = origin.scope if origin is not None else " ".join(scopes)
        if include_refresh_token and "offline_access" in kept_scope.split():
            refresh = generate_token(48)
            kept = (
                origin.principal
                if origin is not None
                else Principal(principal.sub, principal.groups, principal.act, audience)
            )
            self.refresh_tokens[refresh] = RefreshRecord(
                refresh,
                client.client_id,
                kept,
                kept_scope,
                time.time() + self.config.refresh_token_lifetime,
            )
            token["refresh_token"] = refresh
        return token

    def metadata(self) -> dict[str, Any]:
        i = self.issuer
        return {
            "issuer": i,
            "token_endpoint": i + "token",
            "jwks_uri": i + "jwk",
            "device_authorization_endpoint": i + "devicecode",
            "grant_types_supported": ["client_credentials", "refresh_token", DEVICE_CODE, TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": sorted({s for c in self.clients.values() for s in c.config.scopes}),
        }

    def purge_device_codes(self) -> None:
        """Forget device codes expired for a lifetime, and their approvals, so memory stays bounded.
        Until then, polling an expired code answers `expired_token` (RFC 8628 3.5)."""
        cutoff = time.time() - self.config.device_code_lifetime
        for credential in [c for c in self.device_codes.values() if c["expires_at"] < cutoff]:
            self.forget_device_code(credential)

    def forget_device_code(self, credential: DeviceCredentialDict) -> None:
        self.device_codes.pop(credential["device_code"], None)
        self.user_grants.pop(credential.get_user_code(), None)

    def approve(self, user_code: str, username: str, password: str | None) -> str | None:
        """A user approving a device code; returns the refusal reason, if any."""
        self.purge_device_codes()
        user = self.config.users.get(username)
        expected = user.password.encode() if user is not None else _NO_SUCH_USER
        # Bytes: compare_digest refuses str with non-ASCII characters; constant time either way.
        if not hmac.compare_digest(expected, (password or "").encode()) or user is None:
            return "unknown user or wrong password"
        credential = next((c for c in self.device_codes.values() if c.get_user_code() == user_code), None)
        if credential is None:
            return "unknown code: check it, or start the login again on your device"
        if credential.is_expired():
            return "this code has expired: start the login again on your device"
        if user_code in self.user_grants:
            return "this code is already approved"
        self.user_grants[user_code] = (Principal(user.sub, list(user.groups)), True)
        return None


def _page(status: int, body: str) -> web.Response:
    """An HTML page of the device flow, which says what this IdP is."""
    return web.Response(
        status=status,
        content_type="text/html",
        text="<!doctype html><title>devidp</title><p><b>interlink-provider devidp: a development IdP, "
        "not for production.</b></p>" + body + "\n",
    )


def _json(status: int, body: Any, headers: Any) -> web.Response:
    extra = {k: v for k, v in (headers or []) if k.lower() != "content-type"}
    return web.json_response(body, status=status, headers=extra)


def _audience(form: dict[str, str]) -> list[str] | None:
    value = form.get("resource") or form.get("aud") or form.get("audience")
    return value.split() if value else None


async def _oauth_request(request: web.Request) -> AioRequest:
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    return AioRequest(request.method, str(request.url), dict(request.headers), form)


def make_app(idp: DevIdP) -> web.Application:
    app = web.Application()

    async def discovery(_: web.Request) -> web.Response:
        return web.json_response(idp.metadata())

    async def jwk(_: web.Request) -> web.Response:
        return web.json_response(idp.keys.jwks())

    async def token(request: web.Request) -> web.Response:
        oauth_request = await _oauth_request(request)
        marker = _requested_audience.set(_audience(oauth_request.form))
        try:
            status, body, headers = idp.create_token_response(oauth_request)
        finally:
            _requested_audience.reset(marker)
        grant = str(oauth_request.form.get("grant_type", "")).rsplit(":", 1)[-1] or "none"
        error = body.get("error", status) if isinstance(body, dict) else status
        ISSUED.labels(grant, "issued" if status == 200 else str(error)).inc()
        return _json(status, body, headers)

    async def devicecode(request: web.Request) -> web.Response:
        oauth_request = await _oauth_request(request)
        status, body, headers = idp.create_endpoint_response("device_authorization", oauth_request)
        return _json(status, body, headers)

    async def device_page(request: web.Request) -> web.Response:
        code = html.escape(request.query.get("user_code", ""))
        return _page(
            200,
            "<form method=post><p>Code <input name=user_code value='" + code + "'></p>"
            "<p>User <input name=username> Password <input name=password type=password></p>"
            "<button>Approve</button></form>",
        )

    async def device_approve(request: web.Request) -> web.Response:
        form = await request.post()
        password = form.get("password")  # a file upload is no password
        refused = idp.approve(
            str(form.get("user_code", "")),
            str(form.get("username", "")),
            password if isinstance(password, str) else None,
        )
        if refused:
            return _page(403, "<p>Refused: " + html.escape(refused) + "</p>")
        return _page(200, "<p>Approved: return to your device.</p>")

    async def rotate(request: web.Request) -> web.Response:
        expected = idp.config.admin_token
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(expected, given):
            return web.Response(status=401, text="admin token required\n")
        return web.json_response({"kid": idp.keys.rotate()})

    async def registry_token(request: web.Request) -> web.Response:
        if idp.registry is None:
            return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": "no registry here"}]}, status=404)
        try:
            query = request.query
            body = idp.registry.issue(
                query.get("service", ""), query.getall("scope", []), request.headers.get("Authorization")
            )
        except RegistryRefusal as refusal:
            code = "UNAUTHORIZED" if refusal.status == 401 else "DENIED"
            headers = {"WWW-Authenticate": 'Basic realm="devidp registry tokens"'} if refusal.status == 401 else {}
            ISSUED.labels("registry", str(refusal.status)).inc()
            return web.json_response(
                {"errors": [{"code": code, "message": str(refusal)}]}, status=refusal.status, headers=headers
            )
        ISSUED.labels("registry", "issued").inc()
        return web.json_response(body)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/.well-known/openid-configuration", discovery)
    # The issuer ends with "/" (as IAM's does) and some clients, SciTokens among them,
    # append "/.well-known/..." to it verbatim.
    app.router.add_get("//.well-known/openid-configuration", discovery)
    app.router.add_get("/jwk", jwk)
    app.router.add_post("/token", token)
    app.router.add_post("/devicecode", devicecode)
    app.router.add_get("/device", device_page)
    app.router.add_post("/device", device_approve)
    app.router.add_post("/admin/rotate-key", rotate)
    app.router.add_get("/registry/token", registry_token)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def ensure_admin_token(config: IdPConfig) -> str:
    """The admin token from the config, or one generated into the state dir (0600)."""
    if config.admin_token:
        return config.admin_token
    path = Path(config.state_dir) / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    config.admin_token = path.read_text().strip()
    return config.admin_token
