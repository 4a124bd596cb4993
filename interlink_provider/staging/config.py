"""`staging:` section of a site config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RucioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Rucio server URL, e.g. https://rucio.example.org")
    auth_host: str | None = Field(None, description="auth server URL (default: host)")
    account: str = "root"
    auth_type: str = Field("userpass", description="userpass for the local site")
    username: str | None = None
    password_file: str | None = Field(None, description="file holding the password (kept 0600)")
    vo: str = "def"
    ca_cert: str | None = None
    request_retries: int = Field(1, ge=0)


class StagingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rucio: RucioConfig | None = Field(None, description="needed for DIDs; plain XRootD URLs work without")
    site: str = Field("LOCAL", description="this site's name for Rucio's client_location (prefer local replicas)")
    cache_dir: str = Field(description="content cache, on the same filesystem as pods_root")
    cache_max_bytes: int = Field(10 * 1024**3, ge=0, description="least-recently-used files are evicted beyond this")
    parallel: int = Field(4, ge=1, description="concurrent file transfers")
    retries: int = Field(3, ge=0, description="retries of a transfer after a transient error")
    retry_backoff_seconds: float = Field(2.0, ge=0, description="first back-off; doubles each retry")
    connection_window: int = Field(10, ge=1, description="seconds XRootD tries to connect to a server")
    connection_retry: int = Field(2, ge=1, description="connection attempts before a server counts as down")
    default_rse: str | None = Field(None, description="outputs' RSE when the pod names none")
    default_scope: str | None = Field(None, description="outputs' scope when the pod names none")
    default_lifetime: int | None = Field(None, gt=0, description="outputs' rule lifetime (seconds)")
