"""What every container runtime provides: the argv that starts a container.

A runtime never builds shell text: it returns argv lists whose elements are data
(quoted by the template) or `Raw` references to arrays the job script computes at
run time (such as the pass-through environment).
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from ..pods.validate import PodRejected


@dataclass(frozen=True)
class Bind:
    source: str  # absolute path on the compute node
    target: str  # absolute path inside the container
    read_only: bool = False


@dataclass(frozen=True)
class LaunchContext:
    """Everything about the site and the pod a runtime needs besides the container."""

    pod_dir: str
    rootfs: str  # a writable per-container directory (sandbox root, enroot data)
    binds: tuple[Bind, ...]
    image_root: str | None = None  # slurm-job.vk.io/image-root annotation
    extra_options: tuple[str, ...] = ()  # slurm-job.vk.io/<runtime>-options
    extra_mounts: tuple[str, ...] = ()  # slurm-job.vk.io/<runtime>-mounts: whole options, e.g. --bind a:b
    gpu_vendor: str = ""  # "nvidia" or "amd" when the container asks for GPUs
    image_pin: str = ""  # the container's pin in the site's image cache (images.pins), when it has one


@dataclass(frozen=True)
class Launch:
    run: tuple[str, ...]  # starts the container's main process
    exec_prefix: tuple[str, ...]  # + argv: runs a command inside the container
    prepare: tuple[tuple[str, ...], ...] = ()  # once before the first start (image pull)
    # Prefix for pass-through variables (SLURM_JOB_ID, CUDA_VISIBLE_DEVICES, ...): the
    # job script builds the array ILP_PASS of "<prefix>NAME=value" words at run time.
    passthrough_prefix: str = ""
    passthrough_flag: str = ""  # e.g. "-e" for enroot: "-e NAME=value" pairs


class ImageDefaults(BaseModel):
    """ENTRYPOINT/CMD of an image, for runtimes that cannot read the image itself."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="glob matched against the image reference, e.g. 'busybox*'")
    entrypoint: list[str] = Field(default_factory=list, description="the image's ENTRYPOINT")
    cmd: list[str] = Field(default_factory=list, description="the image's CMD (a container's `args` replace it)")


def kubernetes_argv(container: ContainerSpec, entrypoint: list[str], cmd: list[str]) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD); `args` replaces CMD."""
    if container.command:
        return [*container.command, *container.args]
    return [*entrypoint, *(container.args or cmd)]


def process_mode(container: ContainerSpec) -> str:
    """Which of Kubernetes' three cases applies, for runtimes whose job script joins the pinned
    image's words at run time (the image is only known once pulled, after the script is written)."""
    if container.command:
        return "command"
    if container.args:
        return "args"
    return "image"


def process_words(container: ContainerSpec) -> list[str]:
    """The pod's own words of the process: all of them with `command`, else the args (or none)."""
    if container.command:
        return [*container.command, *container.args]
    return list(container.args)


def counted(words: list[str]) -> list[str]:
    """A list as the job script's functions take it: its length, then its words. A length, not a
    `--` separator: runtime options come from annotations and may hold any word, even `--`."""
    return [str(len(words)), *words]


def find_image_defaults(image: str, table: list[ImageDefaults]) -> ImageDefaults | None:
    bare = image.split("://", 1)[-1]
    for entry in table:
        if fnmatch.fnmatchcase(bare, entry.image) or fnmatch.fnmatchcase(image, entry.image):
            return entry
    return None


def image_reference(image: str, prefix: str, override: str | None) -> str:
    """interLink's rule: a prefix such as docker:// unless the image already has a
    scheme or is an absolute path; the image-root annotation replaces the prefix."""
    if "://" in image or image.startswith("/"):
        return image
    return f"{override if override is not None else prefix}{image}"


class Runtime(ABC):
    """A way to run a container on a compute node."""

    name: str = ""
    # Annotation stems read for extra options/mounts: slurm-job.vk.io/<stem>-options and
    # <stem>-mounts. interLink's own names are "singularity" (for Apptainer too) and "enroot".
    annotation_stems: tuple[str, ...] = ()

    @property
    def uses_image_cache(self) -> bool:
        """The pod's images are pulled into the site's cache before its job is submitted (and the
        job runs them from there: ctx.image_pin)."""
        return False

    @abstractmethod
    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        """The argv for this container (may raise PodRejected)."""


def reject(container: ContainerSpec, reason: str) -> PodRejected:
    return PodRejected(reason, field=f"container {container.name!r}")


def require_pin(container: ContainerSpec, ctx: LaunchContext, why: str) -> str:
    """The container's pin; without one (a site whose config has no `images` section) the pod is
    refused when it is created rather than failing on the compute node."""
    if not ctx.image_pin:
        raise reject(container, f"{why} needs the site's image cache (its config has no `images` section)")
    return ctx.image_pin
