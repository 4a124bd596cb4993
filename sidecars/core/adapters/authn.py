"""Authenticating callers of the sidecar, for both protocol adapters (REST and gRPC).

A bearer token is validated (trusted issuer, signature through the JWKS, audience,
lifetime, WLCG profile), mapped by site policy to a local account, and checked for
the scope the operation needs. Without a token, only the unix socket may be used,
and only where the site config says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from interlink_provider.auth import errors
from interlink_provider.auth.identity import Identity
from interlink_provider.auth.mapping import Operation
from interlink_provider.auth.validate import TokenValidator
from interlink_provider.telemetry.metrics import AUTH_REFUSED as REFUSED
from sidecars.core.adapters.settings import AuthConfig
from sidecars.core.domain.principal import LOCAL, Principal


@dataclass(frozen=True)
class Caller:
    principal: Principal
    identity: Identity | None  # None: a tokenless caller on the trusted unix socket

    @property
    def expires_at(self) -> float | None:
        """When the caller's token expires (epoch seconds): long calls end then. None: never."""
        return self.identity.expires_at if self.identity is not None and self.identity.expires_at else None


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.validator = TokenValidator(config.token)

    async def close(self) -> None:
        await self.validator.close()

    async def caller(self, authorization: str | None, via_unix_socket: bool) -> Caller:
        try:
            if not authorization:
                if via_unix_socket and self.config.unix_socket_without_token:
                    account = self.config.unix_socket_account
                    return Caller(Principal(LOCAL.key, account, site_admin=self.config.unix_socket_admin), None)
                raise errors.MissingToken("this sidecar needs an `Authorization: Bearer <token>` header")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.MalformedToken("the Authorization header must be `Bearer <token>`")
            identity = await self.validator.validate(token)
            account = self.config.identities.account_for(identity)
            actor = f"{identity.actor}@{identity.issuer}" if identity.actor else ""
            admin = self.config.identities.is_site_admin(identity)
            return Caller(
                Principal(identity.key, account, actor=actor, token=token.strip(), site_admin=admin), identity
            )
        except errors.AuthError as exc:
            REFUSED.labels(exc.code).inc()  # logged by the protocol adapter that answers it
            raise

    def require(self, caller: Caller, operation: Operation) -> None:
        if caller.identity is None:
            return  # the trusted socket may do everything it was opened for
        try:
            self.config.identities.check(caller.identity, operation)
        except errors.AuthError as exc:
            REFUSED.labels(exc.code).inc()
            raise
