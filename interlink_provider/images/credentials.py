"""imagePullSecrets: the credentials a pod names for private registries, in the
`.dockerconfigjson` format Kubernetes stores them in; the kubelet's matching rule is kept simple
here: the entry whose key is the reference's registry (`https://index.docker.io/v1/` and friends
count as docker.io), the first secret that has one winning."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from interlink_provider.images.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS


def registry_key(key: str) -> str:
    """`https://index.docker.io/v1/` -> docker.io; `host:port/path` -> host:port."""
    host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    return DEFAULT_DOMAIN if host in LEGACY_DOMAINS else host


def parse_dockerconfigjson(data: bytes | str) -> dict[str, dict[str, str]]:
    """A secret's `.dockerconfigjson` as {registry: {"auth": base64(user:password)}}."""
    document = json.loads(data)
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError("a .dockerconfigjson has an `auths` object")
    out: dict[str, dict[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise ValueError(f"the auths entry for {key!r} is not an object")
        auth = entry.get("auth")
        if not auth and "username" in entry and "password" in entry:
            auth = base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
        if not isinstance(auth, str) or not auth:
            raise ValueError(f"the auths entry for {key!r} has no credentials")
        out[registry_key(str(key))] = {"auth": auth}
    return out


def basic(username: str, password: str) -> dict[str, str]:
    """One entry from a user name and a password (tests, a site's own robot account)."""
    return {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}


def auth_for(domain: str, secrets: Sequence[Mapping[str, Mapping[str, Any]]]) -> Mapping[str, Any] | None:
    """The first secret's entry for this registry, or None (an anonymous pull)."""
    for secret in secrets:
        entry = secret.get(domain)
        if entry is not None:
            return entry
    return None
