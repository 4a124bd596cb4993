"""`images:` section of a site config: the image cache a site's pods run from."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from interlink_provider.images.cache import ImageCache
from interlink_provider.images.tools import Tools


class ImagesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_dir: str = Field(
        description="the image cache, on a filesystem the compute nodes share; written only by the "
        "sidecar's account, readable by the accounts pods run as"
    )
    mirrors: dict[str, str] = Field(
        default_factory=dict,
        description="registry -> host:port pulled from instead, e.g. docker.io: registry.site.example:5000",
    )
    cert_dir: str | None = Field(
        None, description="directory holding ca.crt, the CA the registries' TLS certificates chain to"
    )
    size_limit_gib: float | None = Field(
        None, gt=0, description="evict least recently used images no live pod runs above this size"
    )
    pull_timeout_seconds: float = Field(600.0, gt=0, description="one download or unpack may take this long")
    skopeo: str = Field("skopeo", description="skopeo on the sidecar's host (name or path)")
    umoci: str = Field("umoci", description="umoci on the sidecar's host (name or path)")

    @property
    def size_limit_bytes(self) -> int | None:
        return None if self.size_limit_gib is None else int(self.size_limit_gib * 2**30)

    def open(self) -> ImageCache:
        """The cache, its directories made (the sidecar's own account owns them)."""
        programs = Tools(skopeo=self.skopeo, umoci=self.umoci, timeout=self.pull_timeout_seconds)
        cert_dir = Path(self.cert_dir) if self.cert_dir else None
        return ImageCache(Path(self.cache_dir), mirrors=self.mirrors, cert_dir=cert_dir, programs=programs)
