"""NVIDIA enroot: import the image once per pod, create a container root, start it.

Without `command`, enroot cannot apply Kubernetes' "args replace CMD" rule (it does
not expose the image ENTRYPOINT), so args alone replace the whole default command.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from ..shell import Raw
from .base import Launch, LaunchContext, Runtime, image_reference


class EnrootConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("enroot", description="enroot executable on the compute nodes (name or path)")
    image_prefix: str = Field(
        "docker://",
        description="prefix of image references that have no scheme and are not absolute paths; "
        "the slurm-job.vk.io/image-root annotation replaces it",
    )
    options: list[str] = Field(["--rw"], description="options for every `enroot start`")


class EnrootRuntime(Runtime):
    name = "enroot"
    annotation_stems = ("enroot",)

    def __init__(self, config: EnrootConfig | None = None) -> None:
        self.config = config or EnrootConfig()

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        exe = self.config.executable
        image = image_reference(container.image, self.config.image_prefix, ctx.image_root)
        squashfs = f"{ctx.rootfs}.sqsh"
        pod_key = hashlib.sha1(ctx.pod_dir.encode()).hexdigest()[:10]
        name = f"ilp-{pod_key}-{container.name}"
        start = [exe, "start", *self.config.options]
        for bind in ctx.binds:
            start += ["--mount", f"{bind.source}:{bind.target}:{'ro' if bind.read_only else 'rw'}"]
        start += [*ctx.extra_mounts, *ctx.extra_options]  # whole options, as in interLink
        start += [Raw('"${ILP_PASS[@]}"')]
        for key, value in container.env:
            start += ["--env", f"{key}={value}"]
        argv = [*container.command, *container.args] if container.command else list(container.args)
        return Launch(
            run=(*start, name, *argv),
            exec_prefix=(*start, name),
            prepare=(
                (exe, "import", "--output", squashfs, image),
                (exe, "create", "--force", "--name", name, squashfs),
            ),
            passthrough_flag="--env",
        )
