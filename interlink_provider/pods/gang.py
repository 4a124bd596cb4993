"""Gangs: pods that run together as one multi-node job, one member per node (pure).

A training run of N workers is N pods that are useless alone: started one by one, the first
ones hold their GPUs while they wait at the rendezvous for the rest. So a pod declares its
gang, and the site holds every member until the whole gang is there, then runs it as one job
that starts all of them at once or none (sidecars/core/domain/gangs.py).

A pod declares a gang with our annotations, `interlink.provider/gang` (its name) and
`interlink.provider/gang-size` (how many members), or as Kueue declares a plain-pod group: the
label `kueue.x-k8s.io/pod-group-name` and the annotation `kueue.x-k8s.io/pod-group-total-count`.
A member's rank is its Indexed Job completion index where it has one; members without one are
ranked by name after those with one (`rank_order`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import annotations as an
from .validate import PodRejected

MAX_GANG_SIZE = 256
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")

# What each member's containers see, as the PyTorch training operator sets them (and torchrun's
# PET_* arguments): the first node is the rendezvous. Passed like the site's variables; a gang
# member's own values of these names are left out when it is translated, so the site's apply.
RENDEZVOUS_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "PET_NNODES",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)


@dataclass(frozen=True)
class GangSpec:
    """A pod's gang: its name (within the pod's namespace), its size, its completion index."""

    name: str
    size: int
    index: int | None = None


def gang_of(annotations: Mapping[str, str], labels: Mapping[str, str]) -> GangSpec | None:
    """The gang a pod declares, or None; PodRejected when the declaration is half there or wrong."""
    if an.GANG in annotations or an.GANG_SIZE in annotations:
        return _declared(annotations, an.GANG, annotations.get(an.GANG), an.GANG_SIZE, "metadata.annotations")
    if an.KUEUE_GROUP_LABEL in labels:
        return _declared(
            annotations, an.KUEUE_GROUP_LABEL, labels[an.KUEUE_GROUP_LABEL], an.KUEUE_GROUP_COUNT, "metadata.labels"
        )
    return None


def _declared(
    annotations: Mapping[str, str], name_key: str, name: str | None, size_key: str, name_place: str
) -> GangSpec:
    if not name or not _NAME.fullmatch(name):
        raise PodRejected(
            f"{name!r} is not a gang name (letters, digits, '-', '_' and '.', at most 63)",
            field=f"{name_place}[{name_key}]",
        )
    size_text = annotations.get(size_key, "")
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_GANG_SIZE:
        raise PodRejected(
            f"{size_text!r}: a gang's size is a number of pods from 1 to {MAX_GANG_SIZE}", field=an.field(size_key)
        )
    return GangSpec(name, int(size_text), _index(annotations))


def _index(annotations: Mapping[str, str]) -> int | None:
    text = annotations.get(an.COMPLETION_INDEX, "")
    if not text:
        return None
    if not text.isdigit():
        raise PodRejected(f"{text!r} is not a completion index", field=an.field(an.COMPLETION_INDEX))
    return int(text)


def rank_order(index: int | None, name: str) -> tuple[int, int, str]:
    """Sort key of a member: completion index first, then the name."""
    return (0, index, name) if index is not None else (1, 0, name)


def gang_key(pod: Mapping[str, Any]) -> str:
    """A pod's gang as the gateway keys it, "namespace/name" ("" alone, or declared wrongly: the
    site refuses those with the reason), from the pod's JSON."""
    metadata = pod.get("metadata") or {}
    try:
        gang = gang_of(metadata.get("annotations") or {}, metadata.get("labels") or {})
    except PodRejected:
        return ""
    return f"{metadata.get('namespace') or ''}/{gang.name}" if gang else ""
