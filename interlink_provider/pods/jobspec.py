"""The scheduler-neutral JobSpec: what a pod *means* once Kubernetes semantics are resolved.

`translate.pod_to_jobspec` builds it from the interLink request; a runtime renders
each container's launch line from it; a backend (Slurm, HTCondor) renders its batch
script from it. It is plain frozen data: no I/O, nothing site-specific except the
choices site policy already made (flavor, defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .annotations import PodOptions
from .gang import GangSpec
from .staging import StagingSpec

VolumeKind = Literal["emptyDir", "configMap", "secret", "projected", "hostPath"]
HandlerKind = Literal["exec", "http", "tcp", "sleep"]
RestartPolicy = Literal["Always", "OnFailure", "Never"]


@dataclass(frozen=True)
class FileItem:
    """One file materialised inside a volume directory (configMap/secret/projected key)."""

    path: str  # relative, validated: no '..', not absolute
    content: bytes
    mode: int


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    kind: VolumeKind
    files: tuple[FileItem, ...] = ()
    host_path: str = ""  # hostPath only
    sensitive: bool = False  # secret/projected: never world-readable, removed first


@dataclass(frozen=True)
class MountSpec:
    volume: str
    container_path: str  # absolute and normalised
    sub_path: str = ""  # relative to the volume root, validated
    read_only: bool = False


@dataclass(frozen=True)
class Handler:
    """A probe or lifecycle-hook action."""

    kind: HandlerKind
    command: tuple[str, ...] = ()  # exec
    scheme: str = "HTTP"  # http
    host: str = "127.0.0.1"  # http/tcp
    port: int = 0  # http/tcp
    path: str = "/"  # http
    headers: tuple[tuple[str, str], ...] = ()  # http
    seconds: int = 0  # sleep


@dataclass(frozen=True)
class ProbeSpec:
    handler: Handler
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    # Kubernetes semantics kept apart: a runtime needs to know whether the image's
    # ENTRYPOINT (no command) or CMD (no args) applies.
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    working_dir: str = ""
    mounts: tuple[MountSpec, ...] = ()
    is_init: bool = False
    restart_policy: RestartPolicy = "Never"
    post_start: Handler | None = None
    pre_stop: Handler | None = None
    startup_probe: ProbeSpec | None = None
    liveness_probe: ProbeSpec | None = None
    readiness_probe: ProbeSpec | None = None
    gpus: int = 0
    pull_policy: str = ""  # imagePullPolicy: Always, IfNotPresent, Never, or "" (Kubernetes' default by tag)


@dataclass(frozen=True)
class Resources:
    """What the whole pod asks of the scheduler (one job per pod)."""

    cpus: int
    memory_mib: int
    gpus: int = 0
    gpu_vendor: Literal["nvidia", "amd", ""] = ""
    # Whether the pod itself asked (limits/requests) or the flavor's default applied:
    # a pod's own numbers beat scheduler flags from annotations, defaults do not.
    cpus_from_pod: bool = False
    memory_from_pod: bool = False


@dataclass(frozen=True)
class JobSpec:
    uid: str
    name: str
    namespace: str
    hostname: str  # what the containers see (hostname.pod_hostname): at most 63 characters
    init_containers: tuple[ContainerSpec, ...]
    containers: tuple[ContainerSpec, ...]
    volumes: tuple[VolumeSpec, ...]
    resources: Resources
    flavor: str
    restart_policy: RestartPolicy
    grace_seconds: int
    deadline_seconds: int | None
    pod_options: PodOptions = field(default_factory=PodOptions)  # what the pod's annotations ask
    warnings: tuple[str, ...] = field(default=())
    staging: StagingSpec = field(default_factory=StagingSpec)
    gang: GangSpec | None = None  # the gang it runs with (pods/gang.py), or alone

    def all_containers(self) -> tuple[ContainerSpec, ...]:
        return (*self.init_containers, *self.containers)
