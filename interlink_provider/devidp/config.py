"""The devidp's configuration: clients, users, exchange policies, lifetimes.

A development IdP's file: client secrets and user passwords are written in it as they are
(plain text), which is acceptable only because the devidp is a test IdP (loopback and HTTPS
unless started with `--insecure-dev`; its tokens are marked as development tokens).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientConfig(Strict):
    secret: str | None = Field(None, description="absent for public clients (device flow only)")
    grant_types: list[str] = Field(
        default_factory=lambda: ["client_credentials"],
        description="grants the client may use: client_credentials, refresh_token (also needed to receive "
        "refresh tokens), urn:ietf:params:oauth:grant-type:device_code, "
        "urn:ietf:params:oauth:grant-type:token-exchange",
    )
    scopes: list[str] = Field(default_factory=list, description="scopes the client may ask for")
    groups: list[str] = Field(default_factory=list, description="wlcg.groups of its own tokens")


class UserConfig(Strict):
    sub: str = Field(description="`sub` of the user's tokens")
    password: str = Field(
        description="asked when approving a device code (plain text: this is a development IdP's file)"
    )
    groups: list[str] = Field(default_factory=list, description="wlcg.groups of the user's tokens")

    @model_validator(mode="before")
    @classmethod
    def _has_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("password"):
            raise ValueError(
                "a user needs a non-empty password: it is asked when the user approves a device code "
                "(plain text in this file is fine for a development IdP)"
            )
        return data


class ClientMatch(Strict):
    type: Literal["ANY", "BY_ID", "BY_SCOPE"] = Field(
        "ANY",
        description="`ANY` client; `BY_ID`: the client whose id is `match`; `BY_SCOPE`: clients that may "
        "ask for scope `match`. More specific matches rank higher (ANY < BY_SCOPE < BY_ID)",
    )
    match: str = Field("", description="a client id (BY_ID) or a scope (BY_SCOPE); unused for ANY")


class ScopePolicy(Strict):
    rule: Literal["PERMIT", "DENY"] = Field(
        "PERMIT", description="permit or deny the scopes it matches (a matching DENY wins)"
    )
    type: Literal["EQ", "REGEXP", "PATH"] = Field(
        "EQ",
        description="`EQ`: the scope equals `match`; `REGEXP`: `match` matches the whole scope; `PATH`: "
        "`match` covers the scope (same name, the same path or one below it)",
    )
    match: str = Field(description="the scope, regular expression or path scope compared with each requested scope")


class ExchangePolicy(Strict):
    description: str = Field("", description="name of the policy in refusals")
    rule: Literal["PERMIT", "DENY"] = Field(
        "PERMIT", description="permit or deny the exchanges it applies to (DENY wins among equally specific policies)"
    )
    origin: ClientMatch = Field(
        ClientMatch(), description="the client the subject token was issued to (its `client_id`)"
    )
    destination: ClientMatch = Field(ClientMatch(), description="the client asking for the exchange")
    scopes: list[ScopePolicy] = Field(
        default_factory=list,
        description="for PERMIT: every requested scope must be permitted by one of these; empty: no scope limits",
    )


class TLSConfig(Strict):
    enabled: bool = Field(False, description="serve HTTPS (the default issuer URL becomes https://)")
    cert_file: str | None = Field(None, description="server certificate; generated with a local CA if absent")
    key_file: str | None = Field(
        None, description="its private key; both are generated into state_dir unless both are set"
    )


class RegistryRule(Strict):
    repository: str = Field(description="glob matched against the repository name, e.g. 'private/*' or '*'")
    pull: list[str] = Field(
        default_factory=list, description="who may pull: user names, client ids, or '*' for anyone (anonymous too)"
    )
    push: list[str] = Field(default_factory=list, description="who may push, as `pull`")


class RegistryConfig(Strict):
    service: str = Field(
        description="the registry's `auth.token.service`: tokens are issued for it only (their audience)"
    )
    token_lifetime: int = Field(300, ge=1, description="seconds a registry token is valid")
    rules: list[RegistryRule] = Field(
        default_factory=list,
        description="the first rule whose repository matches decides what is granted; no rule: nothing",
    )


class IdPConfig(Strict):
    issuer: str | None = Field(None, description="defaults to http(s)://host:port/ (trailing slash, like IAM)")
    host: str = Field(
        "127.0.0.1",
        description="address to listen on; also in the default issuer and the generated certificate. A "
        "loopback address (127.0.0.1, ::1, localhost) unless started with `--insecure-dev`",
    )
    port: int = Field(8480, description="TCP port to listen on (`--port` overrides it)")
    state_dir: str = Field(
        ".devidp",
        description="signing keys, the generated admin token and TLS files; may name environment "
        "variables (unset: an error); relative to the config file",
    )
    tls: TLSConfig = Field(TLSConfig(), description="HTTPS; plain HTTP when not enabled, which needs `--insecure-dev`")
    admin_token: str | None = Field(None, description="bearer token for /admin endpoints")
    access_token_lifetime: int = Field(3600, ge=1, description="seconds an access token is valid")
    refresh_token_lifetime: int = Field(
        30 * 24 * 3600, ge=1, description="seconds a refresh token is valid (issued only with offline_access)"
    )
    device_code_lifetime: int = Field(
        600,
        ge=1,
        description="seconds a device code is valid (announced as the device endpoint's `expires_in`); then "
        "polling it answers `expired_token` and approving it is refused, and after as long again it is forgotten",
    )
    device_poll_interval: int = Field(
        1, ge=0, description="seconds a device should wait between polls (announced as `interval`)"
    )
    rotate_refresh_tokens: bool = Field(
        True,
        description="a used refresh token is revoked (the answer carries a new one); false: reusable until it expires",
    )
    clients: dict[str, ClientConfig] = Field(default_factory=dict, description="OAuth clients, by client_id")
    users: dict[str, UserConfig] = Field(
        default_factory=dict, description="users, by the name they give when approving a device code"
    )
    registry: RegistryConfig | None = Field(
        None,
        description="tokens for a container registry (Distribution's token auth) at /registry/token; its "
        "certificate is `registry-token.pem` in state_dir",
    )
    exchange_policies: list[ExchangePolicy] = Field(
        default_factory=lambda: [ExchangePolicy(description="Allow all exchanges")],
        description="which client may exchange which tokens, for which scopes (as in IAM); none applicable: refused",
    )

    def issuer_url(self) -> str:
        if self.issuer:
            return self.issuer
        scheme = "https" if self.tls.enabled else "http"
        return f"{scheme}://{self.host}:{self.port}/"


def load(path: str | Path) -> IdPConfig:
    """The config file; `state_dir` may name environment variables and be relative to the file."""
    file = Path(path)
    config = IdPConfig.model_validate(yaml.safe_load(file.read_text()) or {})
    state = Path(os.path.expandvars(config.state_dir))
    if "$" in str(state):
        raise ValueError(f"state_dir {config.state_dir!r} names an unset environment variable")
    config.state_dir = str(state if state.is_absolute() else (file.parent / state).resolve())
    return config
