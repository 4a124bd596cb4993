"""What the interLink API server does to a Virtual Kubelet's create request before the
plugin sees it: the ConfigMaps, Secrets and projected-volume maps of the pod are
handed to each (init)container that mounts them (`RetrievedPodData.container`).

Shared by the VK emulation (`manifest.create_request`) and the gateway, which takes
the API server's place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Lookup = Callable[[str, bool], "dict[str, Any] | None"]  # (name, optional) -> object or None


def retrieved_containers(
    pod: dict[str, Any], config_map: Lookup, secret: Lookup, projected: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One RetrievedContainer (JSON) per init container, then per container."""
    spec = pod.get("spec") or {}
    volumes = {v["name"]: v for v in spec.get("volumes") or [] if isinstance(v, dict) and "name" in v}
    retrieved = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        entry: dict[str, Any] = {
            "name": container.get("name", ""),
            "configMaps": [],
            "secrets": [],
            "projectedvolumemaps": [],
            "emptyDirs": None,
        }
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name"))
            if volume is None:
                continue
            if "configMap" in volume:
                ref = volume["configMap"]
                found = config_map(ref.get("name", ""), bool(ref.get("optional")))
                if found is not None:
                    entry["configMaps"].append(found)
            elif "secret" in volume:
                ref = volume["secret"]
                found = secret(ref.get("secretName", ""), bool(ref.get("optional")))
                if found is not None:
                    entry["secrets"].append(found)
            elif volume["name"] in projected:
                entry["projectedvolumemaps"].append(projected[volume["name"]])
        retrieved.append(entry)
    return retrieved


def by_name(items: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Kubernetes objects by their metadata.name."""
    return {i.get("metadata", {}).get("name"): i for i in items or []}


def from_create_request(request: dict[str, Any]) -> dict[str, Any]:
    """VK -> API `PodCreateRequests` (JSON) as the API -> plugin `RetrievedPodData` (JSON)."""
    config_maps, secrets = by_name(request.get("configmaps")), by_name(request.get("secrets"))
    projected = by_name(request.get("projectedvolumesmaps"))
    pod = request.get("pod") or {}
    return {
        "pod": pod,
        "container": retrieved_containers(
            pod, lambda name, _: config_maps.get(name), lambda name, _: secrets.get(name), projected
        ),
    }
