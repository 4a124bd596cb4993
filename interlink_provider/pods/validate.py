"""Checks on names and paths that come from a pod and end up in file paths or job scripts.

Everything a pod names (containers, volumes, keys, subPaths, mount paths) becomes a
path on the site's filesystem or an argument of a runtime. These checks make sure
no such value can escape the pod's working directory or smuggle a separator.
"""

from __future__ import annotations

import posixpath
import re

from interlink_provider.refusals import Rejected


class PodRejected(Rejected, ValueError):
    """The pod cannot run here; `reason` is shown to the user as is (answered `pod rejected: ...`)."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def dns_label(value: str, field: str) -> str:
    if not _DNS1123_LABEL.fullmatch(value):
        raise PodRejected(
            f"{value!r} is not a valid name (lowercase letters, digits and '-', at most 63)",
            field=field,
        )
    return value


def dns_subdomain(value: str, field: str) -> str:
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise PodRejected(f"{value!r} is not a valid DNS-1123 subdomain", field=field)
    return value


def pod_uid(value: str, field: str = "metadata.uid") -> str:
    if not value:
        raise PodRejected("the pod has no UID", field=field)
    if not _UID.fullmatch(value) or ".." in value:
        raise PodRejected(f"{value!r} is not a valid UID", field=field)
    return value


def config_key(value: str, field: str) -> str:
    if not _CONFIG_KEY.fullmatch(value) or value in (".", ".."):
        raise PodRejected(f"key {value!r} is not a valid ConfigMap/Secret key", field=field)
    return value


def relative_path(value: str, field: str) -> str:
    """A path inside a volume (configMap item path, subPath): relative, no '..' element."""
    if not value:
        raise PodRejected("path must not be empty", field=field)
    if value.startswith("/"):
        raise PodRejected(f"path {value!r} must be relative", field=field)
    if _CONTROL.search(value):
        raise PodRejected(f"path {value!r} contains control characters", field=field)
    parts = value.split("/")
    if ".." in parts:
        raise PodRejected(f"path {value!r} must not contain '..'", field=field)
    normalised = posixpath.normpath(value)
    if normalised in (".", "") or normalised.startswith("../"):
        raise PodRejected(f"path {value!r} does not name a file", field=field)
    return normalised


# Where a volume may not be mounted: these are the runtime's own mounts.
_FORBIDDEN_MOUNT_ROOTS = ("/proc", "/sys", "/dev")


def mount_path(value: str, field: str) -> str:
    """A container mount point: absolute, normalised, and safe as a runtime bind argument."""
    if not value.startswith("/"):
        raise PodRejected(f"mountPath {value!r} must be absolute", field=field)
    if _CONTROL.search(value):
        raise PodRejected(f"mountPath {value!r} contains control characters", field=field)
    if ".." in value.split("/"):
        raise PodRejected(f"mountPath {value!r} must not contain '..'", field=field)
    # Runtimes take binds as "src:dst[:opts]" lists separated by ',' (apptainer, enroot).
    if ":" in value or "," in value:
        raise PodRejected(f"mountPath {value!r} must not contain ':' or ','", field=field)
    normalised = posixpath.normpath(value)
    if normalised == "/":
        raise PodRejected("mountPath must not be '/'", field=field)
    for root in _FORBIDDEN_MOUNT_ROOTS:
        if normalised == root or normalised.startswith(root + "/"):
            raise PodRejected(f"mountPath {value!r} is reserved for the runtime", field=field)
    return normalised


def no_nul(value: str, field: str) -> str:
    """Process arguments and environment values cannot carry NUL bytes."""
    if "\x00" in value:
        raise PodRejected("value contains a NUL byte", field=field)
    return value


def env_name(value: str, field: str) -> str:
    if not value or "=" in value or _CONTROL.search(value):
        raise PodRejected(f"environment variable name {value!r} is invalid", field=field)
    return value
