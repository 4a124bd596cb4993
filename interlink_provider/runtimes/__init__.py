"""Layer 2: container runtimes. Each turns a ContainerSpec into the argv that runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .apptainer import ApptainerConfig, ApptainerRuntime, SingularityRuntime
from .base import Bind, ImageDefaults, Launch, LaunchContext, Runtime
from .charliecloud import CharliecloudConfig, CharliecloudRuntime
from .enroot import EnrootConfig, EnrootRuntime
from .host import HostRuntime
from .podman import PodmanConfig, PodmanRuntime
from .sandbox import SandboxConfig, SandboxRuntime

RuntimeName = Literal["apptainer", "singularity", "enroot", "charliecloud", "podman", "sandbox", "host"]


class RuntimeConfig(BaseModel):
    """`runtime:` section of a site config."""

    model_config = ConfigDict(extra="forbid")

    default: RuntimeName = Field(
        "apptainer", description="runtime of pods without the interlink.provider/runtime annotation (always allowed)"
    )
    allowed: list[RuntimeName] = Field(
        default_factory=list,
        description="runtimes a pod may pick with the interlink.provider/runtime annotation",
    )
    apptainer: ApptainerConfig = Field(ApptainerConfig(), description="the apptainer runtime")
    singularity: ApptainerConfig = Field(
        ApptainerConfig(executable="singularity"), description="the singularity runtime (SingularityCE)"
    )
    enroot: EnrootConfig = Field(EnrootConfig(), description="the enroot runtime")
    charliecloud: CharliecloudConfig = Field(
        CharliecloudConfig(), description="the charliecloud runtime (ch-run, images from the site's image cache)"
    )
    podman: PodmanConfig = Field(
        PodmanConfig(), description="the podman runtime (rootless podman, images from the site's image cache)"
    )
    sandbox: SandboxConfig = Field(
        SandboxConfig(), description="the sandbox runtime (bubblewrap); its image_defaults serve the host runtime too"
    )


def make_runtime(name: RuntimeName, config: RuntimeConfig) -> Runtime:
    if name == "apptainer":
        return ApptainerRuntime(config.apptainer)
    if name == "singularity":
        return SingularityRuntime(config.singularity)
    if name == "enroot":
        return EnrootRuntime(config.enroot)
    if name == "charliecloud":
        return CharliecloudRuntime(config.charliecloud)
    if name == "podman":
        return PodmanRuntime(config.podman)
    if name == "sandbox":
        return SandboxRuntime(config.sandbox)
    return HostRuntime(config.sandbox)


__all__ = [
    "Bind",
    "ImageDefaults",
    "Launch",
    "LaunchContext",
    "Runtime",
    "RuntimeConfig",
    "RuntimeName",
    "make_runtime",
]
