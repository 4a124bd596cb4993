"""The charliecloud runtime: the pod's own image, pulled into the site's cache, run by ch-run.

Charliecloud (LANL) runs an unpacked image with unprivileged user namespaces, no daemon and no
setuid helper. The image comes from the sidecar's image cache (`interlink_provider.images`): the
sidecar pulls it on the login node before the job is submitted and pins each container to a
digest; the job script sources the pin (`images.pins`) and needs no registry on the compute node.

What the container sees, as under a kubelet: the image's filesystem with a private writable layer
(an overlay in node-local temporary space, discarded when the container ends, as a container's
writable layer is on restart; fuse-overlayfs shows the image's files as the container's own, so it
may change them too, where the kernel's overlayfs leaves them to the cache's account), the pod's
volumes at their mountPaths (created in that layer when
the image lacks them), a private /tmp, the pod's hostname, GPU devices only when it asks for GPUs,
and the process Kubernetes' rule gives
(`images.command`): Entrypoint and Cmd unless the pod's command or args replace them, the image's
Env under the pod's, its WorkingDir unless the pod sets one, its User (root when it names none).
Files the container writes on volumes belong to the pod's account on the host. `kubectl exec`,
exec probes and hooks run in the container's own namespaces (nsenter), so they see its /tmp, and
its hostname where a fuse daemon keeps our outer namespaces in reach (`ilp_ch_outer`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from .base import Launch, LaunchContext, Runtime, process_mode, process_words, require_pin


class CharliecloudConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("ch-run", description="ch-run on the compute nodes (name or path)")
    fuse_overlayfs: str = Field(
        "fuse-overlayfs",
        description="fuse-overlayfs on the compute nodes (name or path; needs /dev/fuse open to the accounts, "
        "mode 0666): the container's writable layer, in which the image's files are the container's own and "
        "may be changed. Empty: the kernel's overlayfs, in which the image's files and directories belong to "
        "the cache's account and only new mount points, the workingDir, /tmp and volumes are writable",
    )
    gpu_devices: list[str] = Field(
        default_factory=lambda: ["/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*", "/dev/kfd"],
        description="GPU device files (globs, expanded on the compute node) a container sees only when it "
        "asks for GPUs: ch-run shows the host's whole /dev, so for the others each is covered by /dev/null. "
        "Which GPUs a GPU container reaches is Slurm's (ConstrainDevices)",
    )


class CharliecloudRuntime(Runtime):
    name = "charliecloud"

    @property
    def uses_image_cache(self) -> bool:
        return True  # the only way it gets an image

    def __init__(self, config: CharliecloudConfig | None = None) -> None:
        self.config = config or CharliecloudConfig()

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        require_pin(container, ctx, "the charliecloud runtime")
        env = [f"{name}={value}" for name, value in container.env]
        binds: list[str] = ["--fuse", self.config.fuse_overlayfs] if self.config.fuse_overlayfs else []
        for bind in ctx.binds:
            binds += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.target]
        if not container.gpus:
            for pattern in self.config.gpu_devices:
                binds += ["--mask", pattern]
        mode = process_mode(container)
        words = process_words(container)
        run = (
            "ilp_charliecloud",
            ctx.image_pin,
            mode,
            container.working_dir,
            *binds,
            "--",
            *env,
            "--",
            *words,
        )
        return Launch(
            run=run,
            exec_prefix=("ilp_charliecloud_exec", ctx.image_pin, *env, "--"),
            prepare=(("ilp_pinned", ctx.image_pin),),
        )
