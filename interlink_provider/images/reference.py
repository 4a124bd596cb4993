"""Kubernetes image references, parsed and normalised the way the kubelet and the container
runtimes do (the grammar of github.com/distribution/reference): `busybox` is
docker.io/library/busybox:latest, the first path component is a registry only when it looks like
a host (a dot, a port or `localhost`), a digest pins the content. A bad name is refused here, with
the reason, so no registry is ever asked for it (Kubernetes' InvalidImageName).

The site's mirrors map a registry to the one the site really pulls from (docker.io to the local
registry on the test site; a pull-through cache at an HPC centre), so pods keep their usual names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from interlink_provider.images.errors import InvalidImageName

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io", "registry-1.docker.io"})  # both are docker.io
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference: `domain/path[:tag][@digest]`; a tag is always set unless a digest is."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository's full name, e.g. docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def pinned(self, digest: str) -> ImageReference:
        """This repository at one digest (what is pulled once a tag is resolved)."""
        return ImageReference(self.domain, self.path, None, digest)

    def located(self, mirrors: Mapping[str, str]) -> ImageReference:
        """Where the site pulls it from: the domain replaced by its mirror, if it has one."""
        mirror = mirrors.get(self.domain)
        return self if mirror is None else ImageReference(mirror, self.path, self.tag, self.digest)


def parse(image: str) -> ImageReference:
    """The reference `image` names, normalised; InvalidImageName says what is wrong with it."""
    if not image:
        raise InvalidImageName(image, "empty image name")
    if image != image.strip():
        raise InvalidImageName(image, "image name has surrounding whitespace")
    remainder, digest = image, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidImageName(image, f"invalid digest {digest!r}")
        if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
            raise InvalidImageName(image, "a sha256 digest is 64 lowercase hexadecimal digits")
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:  # a colon after the last slash separates a tag (before it: a port)
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidImageName(image, f"invalid tag {tag!r}")
    if not remainder:
        raise InvalidImageName(image, "no repository name")
    domain, path = _split_domain(remainder)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidImageName(image, f"invalid registry host {domain!r}")
    for component in path.split("/"):
        if component != component.lower() and _COMPONENT.fullmatch(component.lower()):
            raise InvalidImageName(image, "repository name must be lowercase")
        if not _COMPONENT.fullmatch(component):
            raise InvalidImageName(image, f"invalid repository name component {component!r}")
    if len(f"{domain}/{path}") > NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageName(image, f"repository name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    """docker's rule: the first component is a registry when it has a dot or a port, is
    localhost, or has capitals (a repository never does); otherwise the name is on docker.io,
    and a one-component name there is an official image (library/)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if not path:
        raise InvalidImageName(name, "no repository name after the registry")
    return domain, path


def parse_mirrors(text: str) -> dict[str, str]:
    """A site's mirrors from `registry=mirror,registry=mirror` (e.g. `docker.io=127.0.0.1:5443`),
    as a configuration or an environment variable carries them; both sides must be hosts."""
    mirrors: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not _DOMAIN.fullmatch(source) or not _DOMAIN.fullmatch(target):
            raise ValueError(f"a mirror is registry=registry (host[:port] each), not {item!r}")
        mirrors[DEFAULT_DOMAIN if source in LEGACY_DOMAINS else source] = target
    return mirrors
