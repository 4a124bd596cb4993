"""Typed subset of the Kubernetes core/v1 objects that a pod offloader needs.

The upstream Virtual Kubelet is written in Go and marshals `k8s.io/api/core/v1`
structs: empty slices and maps arrive as JSON `null`, optional structs are
omitted, and fields we do not use are many. So every model here:

* ignores unknown fields (the full v1.Pod has hundreds),
* accepts `null` wherever Go may send it for a list or a map,
* validates the types of the fields we *do* use, so a malformed request is
  refused with a field path instead of failing later inside a job script.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")


def _none_to_empty_list(value: Any) -> Any:
    return [] if value is None else value


def _none_to_empty_dict(value: Any) -> Any:
    return {} if value is None else value


NullableList = Annotated[list[T], BeforeValidator(_none_to_empty_list)]
NullableStrMap = Annotated[dict[str, str], BeforeValidator(_none_to_empty_dict)]


class K8sModel(BaseModel):
    """Base for all wire models: camelCase JSON names, unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=False)


# --------------------------------------------------------------------------- meta


class ObjectMeta(K8sModel):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    labels: NullableStrMap = {}
    annotations: NullableStrMap = {}


# --------------------------------------------------------------------------- env


class KeyRef(K8sModel):
    name: str = ""
    key: str
    optional: bool | None = None


class FieldRef(K8sModel):
    field_path: str = Field(alias="fieldPath")


class ResourceFieldRef(K8sModel):
    container_name: str = Field("", alias="containerName")
    resource: str


class EnvVarSource(K8sModel):
    config_map_key_ref: KeyRef | None = Field(None, alias="configMapKeyRef")
    secret_key_ref: KeyRef | None = Field(None, alias="secretKeyRef")
    field_ref: FieldRef | None = Field(None, alias="fieldRef")
    resource_field_ref: ResourceFieldRef | None = Field(None, alias="resourceFieldRef")


class EnvVar(K8sModel):
    name: str
    # Go omits empty values (`omitempty`): a missing value means "".
    value: str = ""
    value_from: EnvVarSource | None = Field(None, alias="valueFrom")


class NameRef(K8sModel):
    name: str = ""
    optional: bool | None = None


class EnvFromSource(K8sModel):
    prefix: str = ""
    config_map_ref: NameRef | None = Field(None, alias="configMapRef")
    secret_ref: NameRef | None = Field(None, alias="secretRef")


# --------------------------------------------------------------------------- handlers


class ExecAction(K8sModel):
    command: NullableList[str] = []


class HTTPHeader(K8sModel):
    name: str
    value: str = ""


class HTTPGetAction(K8sModel):
    path: str = "/"
    port: int | str
    host: str = ""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: NullableList[HTTPHeader] = Field([], alias="httpHeaders")


class TCPSocketAction(K8sModel):
    port: int | str
    host: str = ""


class SleepAction(K8sModel):
    seconds: int


class LifecycleHandler(K8sModel):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = Field(None, alias="httpGet")
    tcp_socket: TCPSocketAction | None = Field(None, alias="tcpSocket")
    sleep: SleepAction | None = None


class Lifecycle(K8sModel):
    post_start: LifecycleHandler | None = Field(None, alias="postStart")
    pre_stop: LifecycleHandler | None = Field(None, alias="preStop")


class Probe(LifecycleHandler):
    initial_delay_seconds: int = Field(0, alias="initialDelaySeconds", ge=0)
    period_seconds: int = Field(10, alias="periodSeconds", ge=1)
    timeout_seconds: int = Field(1, alias="timeoutSeconds", ge=1)
    failure_threshold: int = Field(3, alias="failureThreshold", ge=1)
    success_threshold: int = Field(1, alias="successThreshold", ge=1)


# --------------------------------------------------------------------------- container


Quantity = int | float | str


class ResourceRequirements(K8sModel):
    limits: Annotated[dict[str, Quantity], BeforeValidator(_none_to_empty_dict)] = {}
    requests: Annotated[dict[str, Quantity], BeforeValidator(_none_to_empty_dict)] = {}


class VolumeMount(K8sModel):
    name: str
    mount_path: str = Field(alias="mountPath")
    sub_path: str = Field("", alias="subPath")
    sub_path_expr: str = Field("", alias="subPathExpr")
    read_only: bool = Field(False, alias="readOnly")


class ContainerPort(K8sModel):
    name: str = ""
    container_port: int = Field(alias="containerPort")
    protocol: str = "TCP"


class SecurityContext(K8sModel):
    run_as_user: int | None = Field(None, alias="runAsUser")
    run_as_group: int | None = Field(None, alias="runAsGroup")
    privileged: bool | None = None


class Container(K8sModel):
    name: str
    image: str = ""
    command: NullableList[str] = []
    args: NullableList[str] = []
    working_dir: str = Field("", alias="workingDir")
    env: NullableList[EnvVar] = []
    env_from: NullableList[EnvFromSource] = Field([], alias="envFrom")
    resources: ResourceRequirements = ResourceRequirements()
    volume_mounts: NullableList[VolumeMount] = Field([], alias="volumeMounts")
    ports: NullableList[ContainerPort] = []
    lifecycle: Lifecycle | None = None
    startup_probe: Probe | None = Field(None, alias="startupProbe")
    liveness_probe: Probe | None = Field(None, alias="livenessProbe")
    readiness_probe: Probe | None = Field(None, alias="readinessProbe")
    security_context: SecurityContext | None = Field(None, alias="securityContext")
    # Sidecar-style init containers (KEP-753) carry restartPolicy: Always.
    restart_policy: str = Field("", alias="restartPolicy")
    image_pull_policy: str = Field("", alias="imagePullPolicy")  # Always, IfNotPresent, Never ("": by tag)


# --------------------------------------------------------------------------- volumes


class KeyToPath(K8sModel):
    key: str
    path: str
    mode: int | None = None


class ConfigMapVolumeSource(K8sModel):
    name: str = ""
    items: NullableList[KeyToPath] = []
    default_mode: int | None = Field(None, alias="defaultMode")
    optional: bool | None = None


class SecretVolumeSource(K8sModel):
    secret_name: str = Field("", alias="secretName")
    items: NullableList[KeyToPath] = []
    default_mode: int | None = Field(None, alias="defaultMode")
    optional: bool | None = None


class DownwardAPIVolumeFile(K8sModel):
    path: str
    field_ref: FieldRef | None = Field(None, alias="fieldRef")
    mode: int | None = None


class DownwardAPIVolumeSource(K8sModel):
    items: NullableList[DownwardAPIVolumeFile] = []
    default_mode: int | None = Field(None, alias="defaultMode")


class ServiceAccountTokenProjection(K8sModel):
    path: str
    audience: str = ""
    expiration_seconds: int | None = Field(None, alias="expirationSeconds")


class VolumeProjection(K8sModel):
    config_map: ConfigMapVolumeSource | None = Field(None, alias="configMap")
    secret: ConfigMapVolumeSource | None = None  # same shape: name + items
    downward_api: DownwardAPIVolumeSource | None = Field(None, alias="downwardAPI")
    service_account_token: ServiceAccountTokenProjection | None = Field(None, alias="serviceAccountToken")


class ProjectedVolumeSource(K8sModel):
    sources: NullableList[VolumeProjection] = []
    default_mode: int | None = Field(None, alias="defaultMode")


class EmptyDirVolumeSource(K8sModel):
    medium: str = ""
    size_limit: Quantity | None = Field(None, alias="sizeLimit")


class HostPathVolumeSource(K8sModel):
    path: str
    type: str = ""


class Volume(K8sModel):
    name: str
    config_map: ConfigMapVolumeSource | None = Field(None, alias="configMap")
    secret: SecretVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None
    downward_api: DownwardAPIVolumeSource | None = Field(None, alias="downwardAPI")
    empty_dir: EmptyDirVolumeSource | None = Field(None, alias="emptyDir")
    host_path: HostPathVolumeSource | None = Field(None, alias="hostPath")
    persistent_volume_claim: dict[str, Any] | None = Field(None, alias="persistentVolumeClaim")

    def kind(self) -> str:
        """The volume source type, as Kubernetes names it ('unknown' if none we model)."""
        for field_name, kind in _VOLUME_KINDS:
            if getattr(self, field_name) is not None:
                return kind
        return "unknown"


_VOLUME_KINDS = (
    ("config_map", "configMap"),
    ("secret", "secret"),
    ("projected", "projected"),
    ("downward_api", "downwardAPI"),
    ("empty_dir", "emptyDir"),
    ("host_path", "hostPath"),
    ("persistent_volume_claim", "persistentVolumeClaim"),
)


# --------------------------------------------------------------------------- pod


class PodSecurityContext(K8sModel):
    run_as_user: int | None = Field(None, alias="runAsUser")
    run_as_group: int | None = Field(None, alias="runAsGroup")


class LocalObjectReference(K8sModel):
    name: str = ""


class PodSpec(K8sModel):
    containers: NullableList[Container] = []
    image_pull_secrets: NullableList[LocalObjectReference] = Field([], alias="imagePullSecrets")
    init_containers: NullableList[Container] = Field([], alias="initContainers")
    volumes: NullableList[Volume] = []
    restart_policy: Literal["Always", "OnFailure", "Never", ""] = Field("Always", alias="restartPolicy")
    termination_grace_period_seconds: int | None = Field(None, alias="terminationGracePeriodSeconds", ge=0)
    active_deadline_seconds: int | None = Field(None, alias="activeDeadlineSeconds", ge=1)
    node_name: str = Field("", alias="nodeName")
    service_account_name: str = Field("", alias="serviceAccountName")
    hostname: str = ""
    security_context: PodSecurityContext | None = Field(None, alias="securityContext")
    node_selector: NullableStrMap = Field({}, alias="nodeSelector")


class PodStatusModel(K8sModel):
    phase: str = ""
    pod_ip: str = Field("", alias="podIP")
    host_ip: str = Field("", alias="hostIP")


class Pod(K8sModel):
    api_version: str = Field("v1", alias="apiVersion")
    kind: str = "Pod"
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec = PodSpec()
    status: PodStatusModel = PodStatusModel()

    def all_containers(self) -> list[Container]:
        """Init containers first, then app containers: the order interLink uses."""
        return [*self.spec.init_containers, *self.spec.containers]


# --------------------------------------------------------------------------- config objects


class ConfigMap(K8sModel):
    metadata: ObjectMeta = ObjectMeta()
    data: NullableStrMap = {}
    binary_data: NullableStrMap = Field({}, alias="binaryData")

    def items_bytes(self) -> dict[str, bytes]:
        """Every key's content as bytes; binaryData is base64 on the wire."""
        out = {key: value.encode() for key, value in self.data.items()}
        for key, value in self.binary_data.items():
            out[key] = _b64decode(value, f"configmap {self.metadata.name} key {key}")
        return out


class Secret(K8sModel):
    metadata: ObjectMeta = ObjectMeta()
    data: NullableStrMap = {}
    string_data: NullableStrMap = Field({}, alias="stringData")
    type: str = "Opaque"

    def items_bytes(self) -> dict[str, bytes]:
        """Decoded secret data. The API server sends `data` base64-encoded; a
        hand-written manifest may use `stringData`, which wins as in Kubernetes."""
        out = {key: _b64decode(value, f"secret {self.metadata.name} key {key}") for key, value in self.data.items()}
        out.update({key: value.encode() for key, value in self.string_data.items()})
        return out


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what}: not valid base64 ({exc})") from exc
