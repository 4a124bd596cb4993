"""The interLink wire format, exactly as the Go structs in `pkg/interlink/types.go` marshal it.

These names are the compatibility contract with the upstream interLink API server
and Virtual Kubelet. The published OpenAPI file uses snake_case and does not match
the Go encoder; the Go JSON tags below are authoritative (see
shared/research/interlink.md §2). Note the two spellings of the projected volume
key: `projectedvolumesmaps` (VK -> API) and `projectedvolumemaps` (API -> plugin).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from .k8s import ConfigMap, K8sModel, NullableList, Pod, Secret

GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class PodCreateRequests(K8sModel):
    """VK -> API `/create` body."""

    pod: Pod
    configmaps: NullableList[ConfigMap] = []
    secrets: NullableList[Secret] = []
    projected_volume_maps: NullableList[ConfigMap] = Field([], alias="projectedvolumesmaps")
    job_script_builder_url: str = Field("", alias="jobscriptURL")


class RetrievedContainer(K8sModel):
    """Per (init)container volumes data, API -> plugin."""

    name: str
    config_maps: NullableList[ConfigMap] = Field([], alias="configMaps")
    projected_volume_maps: NullableList[ConfigMap] = Field([], alias="projectedvolumemaps")
    secrets: NullableList[Secret] = []
    empty_dirs: NullableList[str] = Field([], alias="emptyDirs")


class RetrievedPodData(K8sModel):
    """API -> plugin `/create` body: the pod and the ConfigMaps/Secrets it mounts."""

    pod: Pod
    containers: NullableList[RetrievedContainer] = Field([], alias="container")
    job_script: str = Field("", alias="jobScript")

    def config_maps(self) -> dict[str, ConfigMap]:
        return {cm.metadata.name: cm for c in self.containers for cm in c.config_maps}

    def secrets(self) -> dict[str, Secret]:
        return {s.metadata.name: s for c in self.containers for s in c.secrets}

    def projected_maps(self) -> dict[str, ConfigMap]:
        """Projected/downwardAPI volume contents, keyed by *volume* name."""
        return {cm.metadata.name: cm for c in self.containers for cm in c.projected_volume_maps}


class CreateStruct(K8sModel):
    """Plugin `/create` response. interLink accepts only HTTP 200 with this body."""

    PodUID: str
    PodJID: str


class ContainerLogOpts(K8sModel):
    Tail: int = Field(0, ge=0)
    Bytes: int = Field(0, ge=0)
    Timestamps: bool = False
    Follow: bool = False
    Previous: bool = False
    SinceSeconds: int = Field(0, ge=0)
    SinceTime: datetime | None = None

    @field_validator("SinceTime")
    @classmethod
    def _go_zero_time_is_unset(cls, value: datetime | None) -> datetime | None:
        """Go marshals an unset time.Time as 0001-01-01T00:00:00Z."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return None if value <= GO_ZERO_TIME else value


class LogStruct(K8sModel):
    Namespace: str = ""
    PodUID: str
    PodName: str = ""
    ContainerName: str = ""
    Opts: ContainerLogOpts = ContainerLogOpts()


class AcceleratorResponse(K8sModel):
    resourceType: str
    available: str


class ResourcesResponse(K8sModel):
    cpu: str | None = None
    memory: str | None = None
    pods: str | None = None
    accelerators: list[AcceleratorResponse] | None = None


class TaintResponse(K8sModel):
    key: str
    value: str | None = None
    effect: str


class PingResponse(K8sModel):
    status: str | None = None
    resources: ResourcesResponse | None = None
    taints: list[TaintResponse] | None = None


def pod_status_json(
    *,
    name: str,
    uid: str,
    namespace: str,
    job_id: str,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
) -> dict[str, Any]:
    """One element of the plugin `/status` response (Go `PodStatus`)."""
    return {
        "name": name,
        "UID": uid,
        "namespace": namespace,
        "JID": job_id,
        "containers": containers,
        "initContainers": init_containers,
    }
