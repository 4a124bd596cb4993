"""Site policy that shapes how a pod is translated (the part of the site config layer 1 needs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .quantity import QuantityError, memory_bytes


class Flavor(BaseModel):
    """A named job shape, as in the interLink Slurm plugin: defaults plus scheduler flags."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="free text for people reading the config")
    cpu_default: int = Field(1, ge=1, description="CPUs when no container asks for any")
    memory_default: str = Field("1Gi", description="memory when no container asks for any")
    gpus: int = Field(0, ge=0, description="GPUs this flavor provides; >0 makes it a GPU flavor")
    scheduler_flags: list[str] = Field(
        default_factory=list, description="extra scheduler flags, e.g. ['--partition=gpu']"
    )

    @field_validator("memory_default")
    @classmethod
    def _valid_memory(cls, value: str) -> str:
        try:
            memory_bytes(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from exc
        return value


class TranslationPolicy(BaseModel):
    """Defaults and limits applied while turning a pod into a JobSpec."""

    model_config = ConfigDict(extra="forbid")

    flavors: dict[str, Flavor] = Field(
        default_factory=lambda: {"default": Flavor(description="site default")},
        description="job shapes by name; a pod picks one with the interlink.provider/flavor "
        "(or slurm-job.vk.io/flavor) annotation",
    )
    default_flavor: str = Field(
        "default",
        description="flavor of pods that name none; GPU pods "
        "first get gpu_flavor, else the first flavor with enough `gpus`",
    )
    gpu_flavor: str | None = Field(None, description="flavor used for GPU pods without an explicit flavor annotation")
    host_path_allow: list[str] = Field(
        default_factory=list,
        description="absolute host directories under which hostPath volumes may point",
    )
    max_volume_bytes: int = Field(16 * 1024 * 1024, ge=0, description="total size of configMap/secret/projected files")
    default_grace_seconds: int = Field(
        30, ge=0, description="seconds from TERM to KILL when a pod without terminationGracePeriodSeconds stops"
    )
    max_grace_seconds: int = Field(300, ge=0, description="cap on any pod's grace period (seconds)")

    @model_validator(mode="after")
    def _flavors_exist(self) -> TranslationPolicy:
        if self.default_flavor not in self.flavors:
            raise ValueError(f"default_flavor {self.default_flavor!r} is not in flavors")
        if self.gpu_flavor is not None and self.gpu_flavor not in self.flavors:
            raise ValueError(f"gpu_flavor {self.gpu_flavor!r} is not in flavors")
        for prefix in self.host_path_allow:
            if not prefix.startswith("/"):
                raise ValueError(f"host_path_allow entries must be absolute: {prefix!r}")
        return self
