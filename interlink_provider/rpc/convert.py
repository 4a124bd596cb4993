"""Pod statuses between the interLink JSON (Kubernetes ContainerStatus) and offloader.v1 messages.

The sidecar answers gRPC from the same JSON its REST API serves; the gateway turns
the messages back into that JSON for the Virtual Kubelet. Both directions live here
so that a round trip is lossless for every field the contract carries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from .offloader.v1 import offloader_pb2 as pb


def _timestamp(text: str | None) -> Timestamp | None:
    if not text:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return stamp


def _rfc3339(stamp: Timestamp) -> str | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    moment: datetime = stamp.ToDatetime(tzinfo=UTC)  # protobuf ships no type information
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(state: dict[str, Any]) -> pb.Terminated:
    return pb.Terminated(
        exit_code=int(state.get("exitCode", 0)),
        reason=state.get("reason", ""),
        message=state.get("message", ""),
        started_at=_timestamp(state.get("startedAt")),
        finished_at=_timestamp(state.get("finishedAt")),
    )


def _terminated_json(message: pb.Terminated) -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": message.exit_code}
    for key, value in (
        ("reason", message.reason),
        ("message", message.message),
        ("startedAt", _rfc3339(message.started_at)),
        ("finishedAt", _rfc3339(message.finished_at)),
    ):
        if value:
            out[key] = value
    return out


def container_status(status: dict[str, Any]) -> pb.ContainerStatus:
    """A Kubernetes ContainerStatus (JSON) as its typed message."""
    out = pb.ContainerStatus(
        name=status.get("name", ""),
        image=status.get("image", ""),
        ready=bool(status.get("ready")),
        started=bool(status.get("started")),
        restart_count=int(status.get("restartCount", 0)),
    )
    state = status.get("state") or {}
    if "terminated" in state:
        out.terminated.CopyFrom(_terminated(state["terminated"]))
    elif "running" in state:
        out.running.CopyFrom(pb.Running(started_at=_timestamp(state["running"].get("startedAt"))))
    else:
        waiting = state.get("waiting") or {}
        out.waiting.CopyFrom(pb.Waiting(reason=waiting.get("reason", ""), message=waiting.get("message", "")))
    last = (status.get("lastState") or {}).get("terminated")
    if last:
        out.last_termination.CopyFrom(_terminated(last))
    return out


def container_status_json(message: pb.ContainerStatus) -> dict[str, Any]:
    """The typed message back as a Kubernetes ContainerStatus (JSON)."""
    kind = message.WhichOneof("state")
    if kind == "terminated":
        state: dict[str, Any] = {"terminated": _terminated_json(message.terminated)}
    elif kind == "running":
        started = _rfc3339(message.running.started_at)
        state = {"running": {"startedAt": started} if started else {}}
    else:
        waiting = {k: v for k, v in (("reason", message.waiting.reason), ("message", message.waiting.message)) if v}
        state = {"waiting": waiting}
    out: dict[str, Any] = {
        "name": message.name,
        "image": message.image,
        "imageID": "",
        "state": state,
        "ready": message.ready,
        "started": message.started,
        "restartCount": message.restart_count,
    }
    if message.HasField("last_termination"):
        out["lastState"] = {"terminated": _terminated_json(message.last_termination)}
    return out


def pod_status_json(message: pb.PodStatus) -> dict[str, Any]:
    """A PodStatus message as one element of the interLink `/status` answer (Go PodStatus)."""
    return {
        "name": message.name,
        "UID": message.uid,
        "namespace": message.namespace,
        "JID": message.job_id,
        "containers": [container_status_json(c) for c in message.containers],
        "initContainers": [container_status_json(c) for c in message.init_containers],
    }
