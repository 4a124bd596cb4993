"""Which site a pod goes to. Pure: the gateway passes what it knows of the sites.

1. The pod names one (annotation `interlink.provider/site`): that site or a refusal.
2. Otherwise the sites whose labels hold every nodeSelector entry that any site
   labels (other selectors, e.g. the virtual node's own, are not ours to judge).
3. Among those, sites that are up before sites that are down, then the most free
   pod slots (from the site's NodeInfo), then the order of the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..refusals import Unroutable
from .config import SiteLink


class NoSite(Unroutable):
    """No site can take the pod; the message says why (answered 422 `no site for this pod: ...`)."""


@dataclass(frozen=True)
class SiteState:
    up: bool
    free_pods: int


def choose_site(pod: dict[str, Any], sites: list[SiteLink], states: dict[str, SiteState], annotation: str) -> SiteLink:
    named = ((pod.get("metadata") or {}).get("annotations") or {}).get(annotation)
    if named:
        for site in sites:
            if site.name == named:
                return site
        raise NoSite(
            f"annotation {annotation}={named!r} names no site of this gateway ({', '.join(s.name for s in sites)})"
        )
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    ours = {key: value for key, value in selector.items() if any(key in s.labels for s in sites)}
    candidates = [s for s in sites if all(s.labels.get(k) == v for k, v in ours.items())]
    if not candidates:
        wanted = ", ".join(f"{k}={v}" for k, v in ours.items())
        raise NoSite(f"no site has the labels the pod's nodeSelector asks for ({wanted})")
    order = {site.name: index for index, site in enumerate(sites)}
    unknown = SiteState(up=False, free_pods=0)
    return min(
        candidates,
        key=lambda s: (not states.get(s.name, unknown).up, -states.get(s.name, unknown).free_pods, order[s.name]),
    )
