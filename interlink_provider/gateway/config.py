"""`interlink-provider gateway --config gateway.yaml`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..listeners import check_listen, is_loopback
from ..paths import expand_variables
from ..pods.annotations import IDENTITY_SECRET, SITE


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayListen(Strict):
    """Where the Virtual Kubelet reaches the interLink API. It carries no user's identity, so whoever
    can call it creates pods at the sites as the gateway: a unix socket is guarded by its mode; a
    TCP listener off loopback needs client certificates (`client_ca`) or the VK's bearer token
    (`token_file`), and TLS unless `insecure_plain_tcp` says otherwise."""

    socket: str | None = Field(None, description="unix socket for the Virtual Kubelet (its InterlinkURL)")
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="permissions of the unix socket (bound owner-only)")
    host: str | None = Field(
        None, description="TCP address: loopback, or (with `client_ca` or `token_file`) any, e.g. 0.0.0.0"
    )
    port: int | None = Field(None, ge=1, le=65535, description="TCP port, together with `host`")
    tls_cert: str | None = Field(
        None, description="server certificate chain (PEM) for TCP: the VK then uses an https:// InterlinkURL"
    )
    tls_key: str | None = Field(None, description="its private key (PEM, kept 0600)")
    client_ca: str | None = Field(
        None,
        description="CA of client certificates: TCP clients must present one it signed (mTLS; the VK's "
        "TLS.CertFile/KeyFile)",
    )
    token_file: str | None = Field(
        None,
        description="file holding the bearer token TCP clients must send (the VK's VKTokenFile; kept 0600, "
        "re-read when it changes)",
    )
    insecure_plain_tcp: bool = Field(
        False, description="allow plain HTTP (no TLS) off loopback: the token crosses the network in clear text"
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest accepted request (bytes)")

    @model_validator(mode="after")
    def _one_address(self) -> GatewayListen:
        tcp_only = {
            "tls_cert": self.tls_cert,
            "token_file": self.token_file,
            "insecure_plain_tcp": self.insecure_plain_tcp,
        }
        check_listen(self.socket, self.host, self.port, self.tls_cert, self.tls_key, self.client_ca, tcp_only)
        if self.host and not is_loopback(self.host):
            if not (self.client_ca or self.token_file):
                raise ValueError(
                    f"listen.host {self.host} is not loopback and the interLink API has no authentication: "
                    "anyone reaching it could create pods as the gateway. Add listen.client_ca (with "
                    "listen.tls_cert and listen.tls_key; the VK presents its TLS.CertFile) or listen.token_file "
                    "(the VK sends its VKTokenFile), or listen on loopback or a unix socket"
                )
            if not self.tls_cert and not self.insecure_plain_tcp:
                raise ValueError(
                    f"listen.host {self.host} is not loopback: add listen.tls_cert and listen.tls_key (the VK's "
                    "InterlinkURL becomes https://), or set `insecure_plain_tcp: true` to send the token in "
                    "clear text (e.g. inside a service mesh that encrypts)"
                )
        return self


class SiteLink(Strict):
    """One site's sidecar, as the gateway reaches it."""

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="the site's name (a DNS label): what a pod's site annotation names",
    )
    target: str = Field(description="host:port of the sidecar's gRPC API")
    ca_file: str | None = Field(None, description="CA of the sidecar's TLS certificate (default: system CAs)")
    cert_file: str | None = Field(None, description="client certificate, for sites that require mTLS")
    key_file: str | None = Field(None, description="private key of cert_file")
    audience: str = Field(description="`aud` of the tokens this site accepts")
    labels: dict[str, str] = Field(default_factory=dict, description="matched against pods' nodeSelector")


class ServiceIdentity(Strict):
    """The gateway's own identity (client credentials), for single-tenant sites."""

    issuer: str = Field(description="the IdP (discovery at <issuer>/.well-known/openid-configuration)")
    ca_file: str | None = Field(None, description="CA of the IdP's HTTPS certificate (default: system CAs)")
    client_id: str = Field(description="the gateway's confidential client (also exchanges users' tokens)")
    client_secret_file: str = Field(description="file holding the client secret (kept 0600)")
    scopes: list[str] = Field(
        default_factory=lambda: ["compute.create", "compute.read", "compute.cancel"],
        description="scopes of the gateway's own tokens (one per site audience)",
    )


IdentityMode = Literal["service", "user"]


class Identities(Strict):
    """Whose identity each namespace's pods run under at the sites."""

    default: IdentityMode = Field("service", description="`service`: the gateway's own; `user`: the pod owner's")
    namespaces: dict[str, IdentityMode] = Field(default_factory=dict, description="per-namespace exceptions")
    secret_annotation: str = Field(
        IDENTITY_SECRET, description="pod annotation naming the Secret with the user's token"
    )
    user_scopes: list[str] = Field(
        default_factory=lambda: ["compute.create", "compute.read", "compute.cancel", "wlcg.groups", "offline_access"],
        description="asked when exchanging a user's token (groups: sites map users by them; offline_access: a grant)",
    )
    grants_file: str | None = Field(None, description="users' delegated refresh tokens (0600); memory only if unset")
    idle_days: float = Field(30, gt=0, description="a grant no pod has used for this long is dropped")

    def mode_for(self, namespace: str) -> IdentityMode:
        return self.namespaces.get(namespace, self.default)


class GatewayConfig(Strict):
    listen: GatewayListen = Field(
        description="where the interLink API is served to the Virtual Kubelet: a unix socket, or host and port"
    )
    sites: list[SiteLink] = Field(min_length=1, description="the sites' sidecars, by unique name")
    identity: ServiceIdentity
    identities: Identities = Field(default_factory=Identities)
    site_annotation: str = Field(SITE, description="a pod naming its site")
    heartbeat_seconds: int = Field(5, ge=1, le=300, description="WatchStatus heartbeats; 3 missed: the site is down")

    @model_validator(mode="after")
    def _unique_sites(self) -> GatewayConfig:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        return self


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """The config file. Paths may use ~ and $VARIABLES (an unset one is an error, as for the sidecar);
    relative ones start at the file's directory."""

    file = Path(path)
    raw = yaml.safe_load(file.read_text()) or {}
    config = GatewayConfig.model_validate(raw)
    base = file.parent.resolve()
    env = os.environ if environ is None else environ

    def resolve(key: str, value: str | None) -> str | None:
        if value is None:
            return None
        expanded = Path(expand_variables(os.path.expanduser(value), env, key))
        return str(expanded if expanded.is_absolute() else base / expanded)

    listen = config.listen
    listen.socket, listen.tls_cert, listen.tls_key, listen.client_ca, listen.token_file = (
        resolve(f"listen.{name}", getattr(listen, name))
        for name in ("socket", "tls_cert", "tls_key", "client_ca", "token_file")
    )
    identity = config.identity
    identity.client_secret_file = resolve("identity.client_secret_file", identity.client_secret_file) or ""
    identity.ca_file = resolve("identity.ca_file", identity.ca_file)
    config.identities.grants_file = resolve("identities.grants_file", config.identities.grants_file)
    for index, site in enumerate(config.sites):
        site.ca_file, site.cert_file, site.key_file = (
            resolve(f"sites[{index}].{name}", getattr(site, name)) for name in ("ca_file", "cert_file", "key_file")
        )
    return config
