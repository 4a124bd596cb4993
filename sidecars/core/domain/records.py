"""What the site knows about each pod: its stage, what it is made of, and what Kubernetes is shown.

A `PodRecord` is one row of the store, immutable: every change is a new record (the store
returns it). `PodSummary` is what the pod is made of (containers, grace period, staging
declaration), fixed at create, never env values or secrets. `PodStatuses` is the
`v1.ContainerStatus` JSON the Virtual Kubelet is given, kept as the JSON it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from interlink_provider.pods.gang import GangSpec
from interlink_provider.pods.jobspec import RestartPolicy
from interlink_provider.pods.staging import StageInput, StageOutput, StagingSpec

# One Kubernetes object as JSON (v1.ContainerStatus and its parts): its shape is Kubernetes'.
JsonObject = dict[str, Any]


class Stage(StrEnum):
    """Where a pod is in its life on the site (stored by value: the strings are the schema)."""

    PULLING = "pulling"  # its images are being pulled into the site's cache; then staged in or submitted
    ACCEPTED = "accepted"  # recorded, not (yet) submitted; retried if submission failed transiently
    STAGING_IN = "staging-in"  # inputs are being staged; submitted afterwards
    SUBMITTING = "submitting"  # the submit command may be running: on restart, look the job up by name
    SUBMITTED = "submitted"  # the job id is known; the reconciler follows it
    STAGING_OUT = "staging-out"  # the job succeeded; its outputs are being staged out and registered
    FINISHED = "finished"  # the job ended; statuses are final
    DELETING = "deleting"  # deletion asked; cancellation in progress
    DELETED = "deleted"  # cancellation confirmed (or nothing to cancel)

    @property
    def terminal(self) -> bool:
        return self in (Stage.FINISHED, Stage.DELETED)

    @property
    def staging(self) -> bool:
        return self in (Stage.STAGING_IN, Stage.STAGING_OUT)

    @property
    def followed(self) -> bool:
        """The scheduler is asked about the pod's job each status cycle."""
        return self in (Stage.SUBMITTED, Stage.DELETING)

    @property
    def words(self) -> str:
        """For messages: 'staging in'."""
        return self.value.replace("-", " ")


@dataclass(frozen=True)
class ContainerInfo:
    """A container as status computation needs it."""

    name: str
    image: str
    is_init: bool
    restart_policy: RestartPolicy
    pull_policy: str = ""  # imagePullPolicy as the pod gave it ("": Kubernetes' default by tag)
    image_id: str = ""  # repository@digest the container is pinned to, once its image is pulled


@dataclass(frozen=True)
class PodStatuses:
    """The container statuses shown for a pod: init containers and app containers."""

    init: tuple[JsonObject, ...] = ()
    apps: tuple[JsonObject, ...] = ()

    def to_json(self) -> JsonObject:
        return {"initContainers": list(self.init), "containers": list(self.apps)}

    @classmethod
    def from_json(cls, data: JsonObject) -> PodStatuses:
        return cls(tuple(data.get("initContainers") or ()), tuple(data.get("containers") or ()))

    def all(self) -> tuple[JsonObject, ...]:
        return (*self.init, *self.apps)


@dataclass(frozen=True)
class PodSummary:
    """What a pod is made of, as the store keeps it: names and images, never env values or secrets."""

    containers: tuple[ContainerInfo, ...]
    grace: int = 30
    runtime: str = ""
    flavor: str = ""
    sensitive_volumes: tuple[str, ...] = ()  # secret/projected: scrubbed once the job ended
    warnings: tuple[str, ...] = ()
    staging: StagingSpec | None = None
    # The statuses a finished job earned, held back while its outputs are staged out.
    final_status: PodStatuses | None = None
    # The scheduler's options decided when the pod was created (Submission.options), for submit.
    submit_options: JsonObject = field(default_factory=dict)
    gang: GangSpec | None = None  # the gang it runs with (domain/gangs.py)

    def container(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)

    def to_json(self) -> JsonObject:
        return {
            "containers": [
                {
                    "name": c.name,
                    "image": c.image,
                    "init": c.is_init,
                    "restart_policy": c.restart_policy,
                    **({"pull_policy": c.pull_policy} if c.pull_policy else {}),
                    **({"image_id": c.image_id} if c.image_id else {}),
                }
                for c in self.containers
            ],
            "sensitive_volumes": list(self.sensitive_volumes),
            "grace": self.grace,
            "runtime": self.runtime,
            "flavor": self.flavor,
            "warnings": list(self.warnings),
            "staging": _staging_json(self.staging) if self.staging else None,
            **({"final_status": self.final_status.to_json()} if self.final_status else {}),
            **({"submit_options": self.submit_options} if self.submit_options else {}),
            **({"gang": dataclasses.asdict(self.gang)} if self.gang else {}),
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> PodSummary:
        final = data.get("final_status")
        return cls(
            containers=tuple(
                ContainerInfo(
                    c["name"],
                    c["image"],
                    bool(c["init"]),
                    c["restart_policy"],
                    c.get("pull_policy", ""),
                    c.get("image_id", ""),
                )
                for c in data["containers"]
            ),
            grace=int(data.get("grace", 30)),
            runtime=str(data.get("runtime", "")),
            flavor=str(data.get("flavor", "")),
            sensitive_volumes=tuple(data.get("sensitive_volumes") or ()),
            warnings=tuple(data.get("warnings") or ()),
            staging=_staging_of(data["staging"]) if data.get("staging") else None,
            final_status=PodStatuses.from_json(final) if final else None,
            submit_options=dict(data.get("submit_options") or {}),
            gang=GangSpec(**data["gang"]) if data.get("gang") else None,
        )


def _staging_json(spec: StagingSpec) -> JsonObject:
    return {
        "inputs": [i.model_dump(exclude_none=True) for i in spec.inputs],
        "outputs": [o.model_dump(exclude_none=True) for o in spec.outputs],
    }


def _staging_of(data: JsonObject) -> StagingSpec:
    return StagingSpec(
        inputs=tuple(StageInput(**i) for i in data.get("inputs", [])),
        outputs=tuple(StageOutput(**o) for o in data.get("outputs", [])),
    )


@dataclass(frozen=True)
class PodRecord:
    """One pod as the store holds it (a change is a new record: `dataclasses.replace` or the store)."""

    uid: str
    namespace: str
    name: str
    pod_dir: str
    job_name: str
    stage: Stage
    summary: PodSummary
    owner: str = ""  # identity key (sub@iss) of whoever created the pod
    actor: str = ""  # identity key of the service that submitted it on the owner's behalf (RFC 8693 `act`)
    account: str = ""  # local account its job runs as ("" = the sidecar's own)
    job_id: str = ""
    phase: str = "Pending"
    status: PodStatuses = field(default_factory=PodStatuses)
    job_state: str = ""
    message: str = ""
    submit_attempts: int = 0
    next_attempt_at: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    delete_requested_at: float | None = None
    hard_cancel_at: float | None = None
    missing_since: float | None = None
    revision: int = 0

    @property
    def staging(self) -> StagingSpec:
        return self.summary.staging or StagingSpec()

    def state_reason(self) -> str:
        """Why the pod is where it is: the sidecar's message, else the first container's reason."""
        if self.message:
            return self.message
        for container in self.status.all():
            for state in container.get("state", {}).values():
                if isinstance(state, dict) and state.get("reason"):
                    return f"{state['reason']}: {state['message']}" if state.get("message") else state["reason"]
        return ""
