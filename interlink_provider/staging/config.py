"""`staging:` section of a site config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RucioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Rucio server URL, e.g. https://rucio.example.org")
    auth_host: str | None = Field(None, description="auth server URL (default: host)")
    account: str = Field("root", description="Rucio account the site acts as (also when presenting bearer tokens)")
    auth_type: str = Field("userpass", description="userpass for the local site")
    username: str | None = Field(None, description="user name for userpass authentication")
    password_file: str | None = Field(None, description="file holding the password (kept 0600)")
    vo: str = Field("def", description="Rucio VO (`def` on single-VO servers)")
    ca_cert: str | None = Field(
        None,
        description="CA bundle for the Rucio servers' HTTPS (absent: $X509_CERT_DIR, else certifi's "
        "bundle); rucio-clients lets a set $X509_CERT_DIR win over it for userpass logins",
    )
    request_retries: int = Field(1, ge=0, description="rucio-clients' retries of a failed request")


class StorageTokensConfig(BaseModel):
    """Storage and Rucio with tokens from the trust network instead of site credentials.

    A pod created with a bearer token gets its own tokens, exchanged (RFC 8693) for the
    pod owner's identity with `offline_access`, so stage-out hours later can refresh
    them; a pod created without one (the trusted unix socket) uses the site client's
    own tokens (client credentials). Tokens are sent only to `storage_endpoints`.
    """

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(description="the IdP (discovery at <issuer>/.well-known/openid-configuration)")
    ca_file: str | None = Field(None, description="CA of the IdP's HTTPS certificate (default: system CAs)")
    client_id: str = Field(description="this site's confidential client (token exchange, refresh, client credentials)")
    client_secret_file: str = Field(description="file holding the client secret (kept 0600)")
    storage_audience: str = Field(description="`aud` the storage expects, e.g. https://storage.example:1094")
    storage_endpoints: list[str] = Field(min_length=1, description="host:port of the storages that get the tokens")
    read_scopes: list[str] = Field(default_factory=lambda: ["storage.read:/"], description="stage-in")
    write_scopes: list[str] = Field(
        default_factory=lambda: ["storage.create:/{scope}", "storage.read:/{scope}"],
        description="stage-out ({scope}: each output's Rucio scope); reading back "
        "is how the copy's checksum is verified",
    )
    rucio_audience: str | None = Field("rucio", description="`aud` of Rucio tokens; null: Rucio keeps userpass")
    rucio_scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile"], description="scopes asked for Rucio tokens"
    )
    x509_cert_dir: str | None = Field(None, description="CA directory (hashed) for TLS to the storage")
    exchange: bool = Field(True, description="exchange the pod owner's token; false: always the site's own")


class StagingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rucio: RucioConfig | None = Field(None, description="needed for DIDs; plain XRootD URLs work without")
    tokens: StorageTokensConfig | None = Field(None, description="tokens for storage and Rucio (trust network)")
    site: str = Field("LOCAL", description="this site's name for Rucio's client_location (prefer local replicas)")
    cache_dir: str = Field(
        description="content cache, on the same filesystem as pods_root; sidecars of one host may share it"
    )
    cache_max_bytes: int = Field(10 * 1024**3, ge=0, description="least-recently-used files are evicted beyond this")
    parallel: int = Field(4, ge=1, description="concurrent file transfers")
    retries: int = Field(3, ge=0, description="retries of a transfer after a transient error")
    retry_backoff_seconds: float = Field(2.0, ge=0, description="first back-off; doubles each retry")
    connection_window: int = Field(10, ge=1, description="seconds XRootD tries to connect to a server")
    connection_retry: int = Field(2, ge=1, description="connection attempts before a server counts as down")
    default_rse: str | None = Field(None, description="outputs' RSE when the pod names none")
    default_scope: str | None = Field(None, description="outputs' scope when the pod names none")
    default_lifetime: int | None = Field(None, gt=0, description="outputs' rule lifetime (seconds)")
