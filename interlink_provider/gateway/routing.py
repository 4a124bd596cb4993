"""Which site a pod goes to. Pure: the gateway passes what it knows of the sites.

1. The pod names one (annotation `interlink.provider/site`): that site or a refusal.
2. Otherwise the sites whose labels hold every nodeSelector entry that any site
   labels (other selectors, e.g. the virtual node's own, are not ours to judge).
3. Among those, sites that are up before sites that are down, then the most free
   pod slots (from the site's NodeInfo), then the order of the config.

A gang (pods/gang.py) runs whole at one site: a member goes where its gang's earlier members
went (`gang_site`, which the gateway remembers); the first one, or any after a restart of the
gateway, to the up site its gang's name picks (a hash), so that members routed apart from each
other's memory still meet.
"""

from __future__ import annotations

import hashlib
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


def choose_site(
    pod: dict[str, Any],
    sites: list[SiteLink],
    states: dict[str, SiteState],
    annotation: str,
    gang: str = "",
    gang_site: str = "",
) -> SiteLink:
    """`gang`: the key of the pod's gang ("" alone); `gang_site`: where its gang went before."""
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
    if gang:
        return _gang_site(gang, gang_site, candidates, states, unknown)
    return min(
        candidates,
        key=lambda s: (not states.get(s.name, unknown).up, -states.get(s.name, unknown).free_pods, order[s.name]),
    )


def _gang_site(
    gang: str, gang_site: str, candidates: list[SiteLink], states: dict[str, SiteState], unknown: SiteState
) -> SiteLink:
    for site in candidates:
        if site.name == gang_site:
            return site

    def draw(site: SiteLink) -> tuple[bool, str]:
        return (not states.get(site.name, unknown).up, hashlib.sha256(f"{gang}\0{site.name}".encode()).hexdigest())

    return min(candidates, key=draw)
