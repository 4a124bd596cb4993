"""Acting as the Virtual Kubelet would: manifests in, interLink create requests out.

`interlink-provider pod run` and the vk-test-set replay have no Kubernetes API
server, so this module does what the API server's admission and the upstream
Virtual Kubelet + interLink API do before a plugin sees a pod: assign a UID and a
namespace, mount the service-account volume, resolve `env.valueFrom`/`envFrom`,
fill projected volumes, and attach the ConfigMaps/Secrets each container mounts.
Pure functions on plain dicts (the wire JSON).
"""

from __future__ import annotations

import base64
import copy
import secrets
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from . import annotations as an
from .retrieve import retrieved_containers

SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# Not a Kubernetes token: there is no API server behind these pods.
STAND_IN_TOKEN = "interlink-provider-stand-in-service-account-token"


class ManifestError(ValueError):
    pass


MAX_COMPLETIONS = 1000


@dataclass
class JobTemplate:
    """A batch/v1 Job: `completions` pods made from the template, each retried up to
    backoffLimit; with completionMode Indexed, each carries its completion index as the Job
    controller sets it (a gang's ranks, pods/gang.py)."""

    name: str
    namespace: str
    template: dict[str, Any]
    backoff_limit: int = 6
    completions: int = 1
    indexed: bool = False

    def indexes(self) -> list[int | None]:
        """One entry per pod to make: its completion index, or None (NonIndexed)."""
        return list(range(self.completions)) if self.indexed else [None] * self.completions

    def make_pod(self, index: int | None = None) -> dict[str, Any]:
        pod = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(self.template)}
        meta = pod.setdefault("metadata", {})
        stem = self.name if index is None else f"{self.name}-{index}"
        meta["name"] = f"{stem}-{secrets.token_hex(3)[:5]}"
        meta["namespace"] = self.namespace
        labels = meta.setdefault("labels", {})
        labels["job-name"] = self.name
        if index is not None:
            labels[an.COMPLETION_INDEX] = str(index)
            meta.setdefault("annotations", {})[an.COMPLETION_INDEX] = str(index)
        return pod


def job_template(meta: dict[str, Any], namespace: str, spec: dict[str, Any]) -> JobTemplate:
    name = meta.get("name", "job")
    mode = spec.get("completionMode") or "NonIndexed"
    if mode not in ("NonIndexed", "Indexed"):
        raise ManifestError(f"Job {name}: completionMode {mode!r} (NonIndexed or Indexed)")
    completions = spec.get("completions", 1)
    if not isinstance(completions, int) or not 1 <= completions <= MAX_COMPLETIONS:
        raise ManifestError(f"Job {name}: completions {completions!r} (a number from 1 to {MAX_COMPLETIONS})")
    template = spec.get("template") or {}
    return JobTemplate(name, namespace, template, int(spec.get("backoffLimit", 6)), completions, mode == "Indexed")


@dataclass
class Manifests:
    pods: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[JobTemplate] = field(default_factory=list)
    config_maps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def load(text: str, default_namespace: str = "default") -> Manifests:
    """Parse a multi-document YAML manifest."""
    out = Manifests()
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}") from exc
    for doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError("every document must be a Kubernetes object")
        kind = doc.get("kind")
        meta = doc.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", default_namespace)
        if kind == "Pod":
            out.pods.append(doc)
        elif kind == "Job":
            out.jobs.append(job_template(meta, namespace, doc.get("spec") or {}))
        elif kind == "ConfigMap":
            out.config_maps[(namespace, meta.get("name", ""))] = doc
        elif kind == "Secret":
            out.secrets[(namespace, meta.get("name", ""))] = _normalise_secret(doc)
        else:
            raise ManifestError(f"unsupported kind {kind!r} (Pod, Job, ConfigMap and Secret are)")
    return out


def _normalise_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """The API server turns stringData into base64 data; so do we."""
    secret = copy.deepcopy(secret)
    data = dict(secret.get("data") or {})
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data
    return secret


def _secret_text(secret: dict[str, Any], key: str) -> str | None:
    value = (secret.get("data") or {}).get(key)
    return None if value is None else base64.b64decode(value).decode("utf-8", "replace")


def stand_in_ca() -> str:
    return resources.files("interlink_provider.pods").joinpath("data/kube-root-ca.crt").read_text()


def _admit(pod: dict[str, Any], namespace: str, node_name: str) -> dict[str, Any]:
    """What the API server adds: UID, namespace, node, defaults, service-account volume."""
    pod = copy.deepcopy(pod)
    meta = pod.setdefault("metadata", {})
    meta["namespace"] = meta.get("namespace") or namespace
    meta["uid"] = meta.get("uid") or str(uuid.uuid4())
    meta.setdefault("annotations", {})
    spec = pod.setdefault("spec", {})
    spec["nodeName"] = node_name
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("serviceAccountName", "default")
    if spec.get("automountServiceAccountToken", True):
        volume = f"kube-api-access-{secrets.token_hex(3)[:5]}"
        spec.setdefault("volumes", []).append(
            {
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        )
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            mounts = container.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == SERVICE_ACCOUNT_MOUNT for m in mounts):
                mounts.append({"name": volume, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True})
    return pod


def _field_value(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    values: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": "",
        "status.hostIP": "",
    }
    if path in values:
        return values[path]
    for prefix, mapping in (
        ("metadata.labels", meta.get("labels") or {}),
        ("metadata.annotations", meta.get("annotations") or {}),
    ):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(mapping.get(path[len(prefix) + 2 : -2], ""))
    raise ManifestError(f"unsupported fieldRef {path!r}")


def _lookup(
    objects: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str, kind: str, optional: bool
) -> dict[str, Any] | None:
    found = objects.get((namespace, name))
    if found is None and not optional:
        raise ManifestError(f"{kind} {namespace}/{name} is referenced but not in the manifest")
    return found


def _resolve_env(pod: dict[str, Any], container: dict[str, Any], m: Manifests) -> None:
    """Like the Virtual Kubelet: valueFrom and envFrom become plain values."""
    namespace = pod["metadata"]["namespace"]
    env = container.get("env") or []
    explicit = {e.get("name") for e in env}
    for var in env:
        source = var.pop("valueFrom", None)
        if not source:
            continue
        if "fieldRef" in source:
            var["value"] = _field_value(pod, source["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = _lookup(m.config_maps, namespace, ref["name"], "ConfigMap", bool(ref.get("optional")))
            value = (cm or {}).get("data", {}).get(ref["key"])
            if value is None and not ref.get("optional"):
                raise ManifestError(f"ConfigMap {ref['name']} has no key {ref['key']!r}")
            var["value"] = value or ""
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = _lookup(m.secrets, namespace, ref["name"], "Secret", bool(ref.get("optional")))
            value = _secret_text(secret, ref["key"]) if secret else None
            if value is None and not ref.get("optional"):
                raise ManifestError(f"Secret {ref['name']} has no key {ref['key']!r}")
            var["value"] = value or ""
        elif "resourceFieldRef" in source:
            var["valueFrom"] = source  # the sidecar resolves it from the pod's resources
    for source in container.pop("envFrom", None) or []:
        prefix = source.get("prefix", "")
        values: dict[str, str] = {}
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = _lookup(m.config_maps, namespace, ref["name"], "ConfigMap", bool(ref.get("optional")))
            values = {k: str(v) for k, v in ((cm or {}).get("data") or {}).items()}
        elif "secretRef" in source:
            ref = source["secretRef"]
            secret = _lookup(m.secrets, namespace, ref["name"], "Secret", bool(ref.get("optional")))
            data = (secret or {}).get("data") or {}
            values = {k: _secret_text(secret, k) or "" for k in data} if secret is not None else {}
        for key, value in values.items():
            if prefix + key not in explicit:
                env.append({"name": prefix + key, "value": value})
    if env:
        container["env"] = env


def _projected_map(pod: dict[str, Any], volume: dict[str, Any], m: Manifests, ca: str) -> dict[str, Any]:
    namespace = pod["metadata"]["namespace"]
    data: dict[str, str] = {}
    sources = volume["projected"]["sources"] if "projected" in volume else [{"downwardAPI": volume["downwardAPI"]}]
    for source in sources or []:
        if "serviceAccountToken" in source:
            data[source["serviceAccountToken"]["path"]] = STAND_IN_TOKEN
        elif "configMap" in source:
            ref = source["configMap"]
            if ref.get("name") == "kube-root-ca.crt":
                cm_data = {"ca.crt": ca}
            else:
                cm = _lookup(m.config_maps, namespace, ref["name"], "ConfigMap", bool(ref.get("optional")))
                cm_data = dict((cm or {}).get("data") or {})
            items = ref.get("items") or [{"key": k, "path": k} for k in cm_data]
            for item in items:
                if item["key"] in cm_data:
                    data[item["path"]] = cm_data[item["key"]]
        elif "secret" in source:
            ref = source["secret"]
            secret = _lookup(m.secrets, namespace, ref["name"], "Secret", bool(ref.get("optional")))
            keys = list((secret or {}).get("data") or {})
            items = ref.get("items") or [{"key": k, "path": k} for k in keys]
            for item in items:
                value = _secret_text(secret, item["key"]) if secret else None
                if value is not None:
                    data[item["path"]] = value
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    data[item["path"]] = _field_value(pod, item["fieldRef"]["fieldPath"])
    return {"metadata": {"name": volume["name"], "namespace": namespace}, "data": data}


def create_request(
    pod: dict[str, Any],
    manifests: Manifests,
    *,
    namespace: str = "default",
    node_name: str = "interlink-provider",
    ca: str | None = None,
) -> dict[str, Any]:
    """The RetrievedPodData the interLink API server would POST to the plugin's /create."""
    pod = _admit(pod, namespace, node_name)
    ns = pod["metadata"]["namespace"]
    spec = pod["spec"]
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for container in containers:
        _resolve_env(pod, container, manifests)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    projected = {
        name: _projected_map(pod, v, manifests, ca or stand_in_ca())
        for name, v in volumes.items()
        if "projected" in v or "downwardAPI" in v
    }
    retrieved = retrieved_containers(
        pod,
        lambda name, optional: _lookup(manifests.config_maps, ns, name, "ConfigMap", optional),
        lambda name, optional: _lookup(manifests.secrets, ns, name, "Secret", optional),
        projected,
    )
    return {"pod": pod, "container": retrieved}


def vk_create_request(
    pod: dict[str, Any],
    manifests: Manifests,
    *,
    namespace: str = "default",
    node_name: str = "interlink-provider",
) -> dict[str, Any]:
    """What the Virtual Kubelet POSTs to the interLink API's /create (PodCreateRequests): the pod with
    every ConfigMap and Secret its volumes name, mounted or not, and one map per projected volume
    (which the VK resolves itself, sources and all)."""
    retrieved = create_request(pod, manifests, namespace=namespace, node_name=node_name)
    admitted = retrieved["pod"]
    ns = admitted["metadata"]["namespace"]
    config_maps: dict[str, dict[str, Any]] = {}
    secrets: dict[str, dict[str, Any]] = {}

    def want(kind: str, name: str, optional: bool) -> None:
        store, into = (manifests.config_maps, config_maps) if kind == "ConfigMap" else (manifests.secrets, secrets)
        found = _lookup(store, ns, name, kind, optional)
        if found is not None:
            into[name] = found

    for volume in admitted["spec"].get("volumes") or []:
        if "configMap" in volume:
            want("ConfigMap", volume["configMap"].get("name", ""), bool(volume["configMap"].get("optional")))
        if "secret" in volume:
            want("Secret", volume["secret"].get("secretName", ""), bool(volume["secret"].get("optional")))
    projected = {m["metadata"]["name"]: m for c in retrieved["container"] for m in c["projectedvolumemaps"]}
    return {
        "pod": admitted,
        "configmaps": list(config_maps.values()),
        "secrets": list(secrets.values()),
        "projectedvolumesmaps": list(projected.values()),
        "jobscriptURL": "",
    }
