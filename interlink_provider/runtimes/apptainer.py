"""Apptainer and SingularityCE: `exec` when the pod sets a command, `run` otherwise.

`run` honours the image's runscript (ENTRYPOINT + CMD, with args replacing CMD),
which is what Kubernetes users expect when they omit `command` (interLink slurm
plugin issue #32). Environment goes through APPTAINERENV_/SINGULARITYENV_
variables, never through an env file the runtime would parse as shell.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..pods.jobspec import ContainerSpec
from ..shell import Raw
from .base import Launch, LaunchContext, Runtime, image_reference


class ApptainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field("apptainer", description="the runtime's executable on the compute nodes (name or path)")
    options: list[str] = Field(
        default_factory=lambda: ["--containall", "--cleanenv", "--no-eval"],
        description="options for every exec/run (interLink uses --containall --no-eval)",
    )
    image_prefix: str = Field(
        "docker://",
        description="prefix of image references that have no scheme and are not absolute paths; "
        "the slurm-job.vk.io/image-root annotation replaces it",
    )


class ApptainerRuntime(Runtime):
    name = "apptainer"
    annotation_stems: tuple[str, ...] = ("singularity", "apptainer")
    env_prefix = "APPTAINERENV_"

    def __init__(self, config: ApptainerConfig | None = None) -> None:
        self.config = config or ApptainerConfig()

    def _common(self, container: ContainerSpec, ctx: LaunchContext) -> list[str]:
        args = list(self.config.options)
        if container.gpus:
            args.append("--rocm" if ctx.gpu_vendor == "amd" else "--nv")
        for bind in ctx.binds:
            args += ["--bind", f"{bind.source}:{bind.target}:{'ro' if bind.read_only else 'rw'}"]
        # As in interLink, the -mounts annotation holds whole options ("--bind /a:/b").
        args += [*ctx.extra_mounts, *ctx.extra_options]
        if container.working_dir:
            args += ["--pwd", container.working_dir]
        return args

    def launch(self, container: ContainerSpec, ctx: LaunchContext) -> Launch:
        image = image_reference(container.image, self.config.image_prefix, ctx.image_root)
        env = [f"{self.env_prefix}{name}={value}" for name, value in container.env]
        head = ["env", Raw('"${ILP_PASS[@]}"'), *env, self.config.executable]
        common = self._common(container, ctx)
        if container.command:
            run = [*head, "exec", *common, image, *container.command, *container.args]
        else:
            run = [*head, "run", *common, image, *container.args]
        return Launch(
            run=tuple(run),
            exec_prefix=(*head, "exec", *common, image),
            passthrough_prefix=self.env_prefix,
        )


class SingularityRuntime(ApptainerRuntime):
    name = "singularity"
    annotation_stems = ("singularity",)
    env_prefix = "SINGULARITYENV_"

    def __init__(self, config: ApptainerConfig | None = None) -> None:
        super().__init__(config or ApptainerConfig(executable="singularity"))
