"""`interlink-provider gateway --config gateway.yaml`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayListen(Strict):
    socket: str | None = Field(None, description="unix socket for the Virtual Kubelet (its InterlinkURL)")
    host: str | None = Field(None, description="TCP address (loopback: the VK in the same pod)")
    port: int | None = Field(None, ge=1, le=65535)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _one_address(self) -> "GatewayListen":
        if not self.socket and not (self.host and self.port):
            raise ValueError("listen needs `socket`, or `host` and `port`")
        return self


class SiteLink(Strict):
    """One site's sidecar, as the gateway reaches it."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    target: str = Field(description="host:port of the sidecar's gRPC API")
    ca_file: str | None = Field(None, description="CA of the sidecar's TLS certificate (default: system CAs)")
    cert_file: str | None = Field(None, description="client certificate, for sites that require mTLS")
    key_file: str | None = None
    audience: str = Field(description="`aud` of the tokens this site accepts")
    labels: dict[str, str] = Field(default_factory=dict, description="matched against pods' nodeSelector")


class ServiceIdentity(Strict):
    """The gateway's own identity (client credentials), for single-tenant sites."""

    issuer: str
    ca_file: str | None = None
    client_id: str
    client_secret_file: str
    scopes: list[str] = Field(default_factory=lambda: ["compute.create", "compute.read", "compute.cancel"])


IdentityMode = Literal["service", "user"]


class Identities(Strict):
    """Whose identity each namespace's pods run under at the sites."""

    default: IdentityMode = Field("service", description="`service`: the gateway's own; `user`: the pod owner's")
    namespaces: dict[str, IdentityMode] = Field(default_factory=dict, description="per-namespace exceptions")
    secret_annotation: str = Field("interlink.provider/identity-secret",
                                   description="pod annotation naming the Secret with the user's token")
    user_scopes: list[str] = Field(
        default_factory=lambda: ["compute.create", "compute.read", "compute.cancel", "wlcg.groups", "offline_access"],
        description="asked when exchanging a user's token (groups: sites map users by them; offline_access: a grant)")
    grants_file: str | None = Field(None, description="users' delegated refresh tokens (0600); memory only if unset")
    idle_days: float = Field(30, gt=0, description="a grant no pod has used for this long is dropped")

    def mode_for(self, namespace: str) -> IdentityMode:
        return self.namespaces.get(namespace, self.default)


class GatewayConfig(Strict):
    listen: GatewayListen
    sites: list[SiteLink] = Field(min_length=1)
    identity: ServiceIdentity
    identities: Identities = Field(default_factory=Identities)
    site_annotation: str = Field("interlink.provider/site", description="a pod naming its site")
    heartbeat_seconds: int = Field(5, ge=1, le=300, description="WatchStatus heartbeats; 3 missed: the site is down")

    @model_validator(mode="after")
    def _unique_sites(self) -> "GatewayConfig":
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        return self


def load_config(path: str | Path) -> GatewayConfig:
    file = Path(path)
    raw = yaml.safe_load(file.read_text()) or {}
    config = GatewayConfig.model_validate(raw)
    base = file.parent.resolve()

    def resolve(value: str | None) -> str | None:
        if value is None:
            return None
        expanded = Path(os.path.expandvars(os.path.expanduser(value)))
        return str(expanded if expanded.is_absolute() else base / expanded)

    config.listen.socket = resolve(config.listen.socket)
    config.identity.client_secret_file = resolve(config.identity.client_secret_file) or ""
    config.identity.ca_file = resolve(config.identity.ca_file)
    config.identities.grants_file = resolve(config.identities.grants_file)
    for site in config.sites:
        site.ca_file, site.cert_file, site.key_file = map(resolve, (site.ca_file, site.cert_file, site.key_file))
    return config
