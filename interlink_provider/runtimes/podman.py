"""The podman runtime: the pod's own image, pulled into the site's cache, run by rootless podman.

Podman runs as the pod's account (the job's), rootless: the account needs subordinate uid/gid
ranges (/etc/subuid, /etc/subgid) and `uidmap`. The image comes from the sidecar's image cache as
for charliecloud (`interlink_provider.images`): the job script sources the pin and runs the pinned
rootfs with `podman run --rootfs ROOTFS:O`, an overlay that keeps the cache untouched. The rootfs
has no image config for podman to read, so the job script (`ilp_podman`, runner/lib.sh) applies
Kubernetes' rule for the process, the image's Env under the pod's, its WorkingDir unless the pod
sets one, and its User, as whom the pod's account runs (root: podman's default mapping; anyone
else: keep-id), so files the container writes on volumes belong to the pod's account.

Every container gets podman state of its own (storage, run root, XDG_RUNTIME_DIR and with it the
rootless pause process) in node-local temporary space, removed when it ends: nothing is shared
between jobs and nothing lands in the account's home. `kubectl exec`, exec probes and hooks run
`podman exec` with the same state, which the job records in the container's directory.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from .base import Launch, LaunchContext, Runtime, counted, process_mode, process_words, reject, require_pin


class PodmanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("podman", description="podman on the compute nodes (name or path)")
    runtime: str = Field(
        "runc",
        description="the OCI runtime podman starts containers with (`podman --runtime`): crun refuses "
        "cgroups in hybrid mode, runc does not",
    )
    global_options: list[str] = Field(
        default_factory=lambda: [
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--log-level",
            "error",
            "--storage-driver",
            "overlay",
            "--storage-opt",
            "overlay.mount_program=/usr/bin/fuse-overlayfs",
        ],
        description="podman's own options, before the command (every run and exec). fuse-overlayfs makes the "
        "overlay on the cached rootfs, whose files belong to an account the container's user namespace does "
        "not map; `--log-level error` keeps podman's warnings out of the container's log",
    )
    options: list[str] = Field(default_factory=list, description="options for every `podman run`")
    gpu_devices: list[str] = Field(
        default_factory=lambda: ["/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*", "/dev/kfd"],
        description="GPU device files (globs, expanded on the compute node) given with --device to a container "
        "that asks for GPUs; the others see none of them. Which GPUs a GPU container reaches is Slurm's",
    )


class PodmanRuntime(Runtime):
    name = "podman"
    annotation_stems = ("podman",)

    def __init__(self, config: PodmanConfig | None = None) -> None:
        self.config = config or PodmanConfig()

    @property
    def uses_image_cache(self) -> bool:
        return True  # the only way it gets an image

    def _run_options(self, container: ContainerSpec, ctx: LaunchContext) -> list[str]:
        """Options of `podman run`: the pod's volumes, the site's options, the annotations'."""
        options: list[str] = []
        for bind in ctx.binds:
            if ":" in bind.source or ":" in bind.target:  # -v splits at colons
                raise reject(container, f"the podman runtime cannot mount a path with ':' ({bind.target})")
            options += ["-v", f"{bind.source}:{bind.target}{':ro' if bind.read_only else ''}"]
        return [*options, *self.config.options, *ctx.extra_mounts, *ctx.extra_options]

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        """ilp_podman PIN EXE NAME MODE WORKDIR N GLOBAL... N OPTION... N DEVICE-GLOB... M NAME=VALUE...
        WORDS...; `kubectl exec`, probes and hooks: ilp_podman_exec PIN EXE NAME N GLOBAL... ARGV..."""
        pin = require_pin(container, ctx, "the podman runtime")
        if ":" in container.working_dir:  # it may become a -v target (a workingDir the image lacks)
            raise reject(container, f"the podman runtime cannot work in a path with ':' ({container.working_dir})")
        pod_key = hashlib.sha1(ctx.pod_dir.encode()).hexdigest()[:10]
        name = f"ilp-{pod_key}-{container.name}"
        head = (pin, self.config.executable, name)
        global_options = counted(["--runtime", self.config.runtime, *self.config.global_options])
        devices = list(self.config.gpu_devices) if container.gpus else []
        env = [f"{key}={value}" for key, value in container.env]
        run = (
            "ilp_podman",
            *head,
            process_mode(container),
            container.working_dir,
            *global_options,
            *counted(self._run_options(container, ctx)),
            *counted(devices),
            *counted(env),
            *process_words(container),
        )
        return Launch(
            run=run,
            exec_prefix=("ilp_podman_exec", *head, *global_options),
            prepare=(("ilp_pinned", pin),),
            passthrough_flag="-e",
        )
