"""The devidp's configuration: clients, users, exchange policies, lifetimes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientConfig(Strict):
    secret: str | None = Field(None, description="absent for public clients (device flow only)")
    grant_types: list[str] = Field(default_factory=lambda: ["client_credentials"])
    scopes: list[str] = Field(default_factory=list, description="scopes the client may ask for")
    groups: list[str] = Field(default_factory=list, description="wlcg.groups of its own tokens")


class UserConfig(Strict):
    sub: str
    password: str | None = Field(None, description="asked when approving a device code")
    groups: list[str] = Field(default_factory=list)


class ClientMatch(Strict):
    type: Literal["ANY", "BY_ID", "BY_SCOPE"] = "ANY"
    match: str = ""


class ScopePolicy(Strict):
    rule: Literal["PERMIT", "DENY"] = "PERMIT"
    type: Literal["EQ", "REGEXP", "PATH"] = "EQ"
    match: str


class ExchangePolicy(Strict):
    description: str = ""
    rule: Literal["PERMIT", "DENY"] = "PERMIT"
    origin: ClientMatch = ClientMatch()
    destination: ClientMatch = ClientMatch()
    scopes: list[ScopePolicy] = Field(default_factory=list)


class TLSConfig(Strict):
    enabled: bool = False
    cert_file: str | None = Field(None, description="server certificate; generated with a local CA if absent")
    key_file: str | None = None


class IdPConfig(Strict):
    issuer: str | None = Field(None, description="defaults to http(s)://host:port/ (trailing slash, like IAM)")
    host: str = "127.0.0.1"
    port: int = 8480
    state_dir: str = ".devidp"
    tls: TLSConfig = TLSConfig()
    admin_token: str | None = Field(None, description="bearer token for /admin endpoints")
    access_token_lifetime: int = Field(3600, ge=1)
    refresh_token_lifetime: int = Field(30 * 24 * 3600, ge=1)
    device_code_lifetime: int = Field(600, ge=1)
    device_poll_interval: int = Field(1, ge=0)
    rotate_refresh_tokens: bool = True
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    users: dict[str, UserConfig] = Field(default_factory=dict)
    exchange_policies: list[ExchangePolicy] = Field(
        default_factory=lambda: [ExchangePolicy(description="Allow all exchanges")]
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
