"""Settings of the protocol adapters: where the REST API listens, the gRPC API, and who may call
them (token validation, identity mapping)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from interlink_provider.auth.accounts import check_account_name, is_superuser_name
from interlink_provider.auth.mapping import IdentityPolicy
from interlink_provider.auth.validate import ValidationConfig
from interlink_provider.listeners import check_listen, is_loopback
from sidecars.core.kits.strict import Strict


class ListenConfig(Strict):
    socket: str | None = Field(None, description="unix socket path (the interLink default)")
    host: str | None = Field(None, description="TCP address, e.g. 127.0.0.1 (off loopback: TLS, see tls_cert)")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port, together with `host`")
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="permissions of the unix socket (bound owner-only)")
    tls_cert: str | None = Field(None, description="server certificate chain (PEM): TCP serves HTTPS")
    tls_key: str | None = Field(None, description="its private key (PEM, kept 0600)")
    client_ca: str | None = Field(
        None, description="CA of client certificates: set it to require mTLS on TCP (besides the token)"
    )
    insecure_plain_tcp: bool = Field(
        False,
        description="allow plain HTTP off loopback: bearer tokens cross the network in clear text (a WARNING "
        "at every start)",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest accepted request")

    @model_validator(mode="after")
    def _one_address(self) -> ListenConfig:
        tcp_only = {"tls_cert": self.tls_cert, "insecure_plain_tcp": self.insecure_plain_tcp}
        check_listen(self.socket, self.host, self.port, self.tls_cert, self.tls_key, self.client_ca, tcp_only)
        if self.host and not is_loopback(self.host) and not self.tls_cert and not self.insecure_plain_tcp:
            raise ValueError(
                f"listen.host {self.host} is not loopback and the REST API carries bearer tokens: add "
                "listen.tls_cert and listen.tls_key (clients then use https://), or set `insecure_plain_tcp: true` "
                "to serve plain HTTP anyway"
            )
        return self


class GrpcConfig(Strict):
    """The gRPC API (proto/offloader/v1) for the gateway: TLS and a token on every call."""

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(ge=1, le=65535, description="TCP port to listen on")
    tls_cert: str = Field(description="server certificate chain (PEM)")
    tls_key: str = Field(description="its private key (PEM, kept 0600)")
    client_ca: str | None = Field(None, description="CA of client certificates: set it to require mTLS")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest message either way")
    max_concurrent_rpcs: int = Field(256, ge=1, description="calls served at once; more are refused")


class AuthConfig(Strict):
    """Who may use this sidecar, and as which local account their jobs run."""

    unix_socket_without_token: bool = Field(
        False,
        description="accept requests without a token on the unix socket (the upstream interLink "
        "API server sends none); TCP always needs a token",
    )
    unix_socket_admin: bool = Field(
        False,
        description="tokenless unix-socket callers are site admins: they may read every pod (the "
        "socket is the site's own channel; its mode decides who can open it)",
    )
    unix_socket_account: str | None = Field(
        None,
        description="local account tokenless unix-socket pods run as; required with "
        "unix_socket_without_token. A POSIX login name, never root (unless allow_jobs_as_root): on a "
        "single-account site, the login the sidecar itself runs as",
    )
    allow_jobs_as_root: bool = Field(
        False,
        description="DANGEROUS: let `root` (or an account with uid 0) be the account jobs run as. "
        "A job then controls the login node and every compute node it lands on. Off: such a mapping "
        "is refused at load, and an account that turns out to have uid 0 is refused at create (403). "
        "The sidecar logs a WARNING at every start while this is on",
    )
    token: ValidationConfig = Field(
        default_factory=ValidationConfig, description="trusted issuers, our audiences, leeway, key caching"
    )
    identities: IdentityPolicy = Field(
        default_factory=IdentityPolicy, description="identity -> local account rules, scopes per operation"
    )

    @field_validator("unix_socket_account", mode="after")
    @classmethod
    def _a_login_name(cls, account: str | None) -> str | None:
        return None if account is None else check_account_name(account)

    @model_validator(mode="after")
    def _accounts_named_and_not_root(self) -> AuthConfig:
        if self.unix_socket_without_token and self.unix_socket_account is None:
            raise ValueError(
                "auth.unix_socket_without_token needs auth.unix_socket_account: the local account tokenless "
                "pods run as (on a single-account site, the login the sidecar runs as; never root)"
            )
        if self.allow_jobs_as_root:
            return self
        named = [("auth.unix_socket_account", self.unix_socket_account)] + [
            (f"auth.identities.rules[{i}].account", rule.account) for i, rule in enumerate(self.identities.rules)
        ]
        for where, account in named:
            if is_superuser_name(account):
                raise ValueError(
                    f"an account is root ({where}): jobs never run as root unless the site sets "
                    "auth.allow_jobs_as_root: true (name an unprivileged account)"
                )
        return self
