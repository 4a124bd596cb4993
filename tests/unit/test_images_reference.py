"""Image references normalised as the kubelet does (github.com/distribution/reference's grammar),
and refused with a reason (InvalidImageName) before any registry is asked."""

from __future__ import annotations

import pytest

from interlink_provider.images.errors import InvalidImageName
from interlink_provider.images.reference import ImageReference, parse, parse_mirrors

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("registry-1.docker.io/ilp/entrypoint:1", "docker.io/ilp/entrypoint:1"),
        ("ilp/entrypoint:1", "docker.io/ilp/entrypoint:1"),
        ("ghcr.io/org/team/app:v1.2.3-rc_1", "ghcr.io/org/team/app:v1.2.3-rc_1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:2", "localhost:5000/app:2"),
        ("127.0.0.1:5443/library/busybox", "127.0.0.1:5443/library/busybox:latest"),
        (f"127.0.0.1:5443/repo@{DIGEST}", f"127.0.0.1:5443/repo@{DIGEST}"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox:1.36@{DIGEST}"),
        ("my-registry.example.org:443/a/b", "my-registry.example.org:443/a/b:latest"),
        ("a__b/c.d/e-f--g:TAG", "docker.io/a__b/c.d/e-f--g:TAG"),
    ],
)
def test_normalised_like_the_kubelet(image, normalised):
    assert str(parse(image)) == normalised


def test_fields():
    ref = parse(f"127.0.0.1:5443/ns/app:1@{DIGEST}")
    assert ref == ImageReference("127.0.0.1:5443", "ns/app", "1", DIGEST)
    assert ref.name == "127.0.0.1:5443/ns/app"
    assert parse("busybox").tag == "latest" and parse("busybox").digest is None
    assert parse(f"busybox@{DIGEST}").tag is None  # a digest alone gets no default tag
    assert str(parse("busybox").pinned(DIGEST)) == f"docker.io/library/busybox@{DIGEST}"


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("", "empty"),
        (" busybox", "whitespace"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/busybox", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:bad tag", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:" + "t" * 129, "invalid tag"),
        ("busybox@sha256:1234", "invalid digest"),
        ("busybox@sha256:" + "AB" * 32, "64"),
        ("busybox@md5", "invalid digest"),
        ("a//b", "component"),
        ("a/-b", "component"),
        ("a/b_", "component"),
        ("registry:5000/", "no repository"),
        ("-host.example/a", "registry host"),
        (":5000/a", "registry host"),
        ("a/" + "b" * 260, "longer than 255"),
    ],
)
def test_bad_references_are_invalid_image_name(image, why):
    with pytest.raises(InvalidImageName) as refused:
        parse(image)
    assert refused.value.reason == "InvalidImageName"
    assert why in refused.value.message
    assert refused.value.image == image


def test_mirrors_move_only_the_registry():
    mirrors = parse_mirrors("docker.io=127.0.0.1:5443, ghcr.io=mirror.example:8443")
    assert mirrors == {"docker.io": "127.0.0.1:5443", "ghcr.io": "mirror.example:8443"}
    assert str(parse("busybox").located(mirrors)) == "127.0.0.1:5443/library/busybox:latest"
    assert str(parse("ghcr.io/o/a@" + DIGEST).located(mirrors)) == f"mirror.example:8443/o/a@{DIGEST}"
    assert str(parse("quay.io/o/a:1").located(mirrors)) == "quay.io/o/a:1"  # no mirror: as named
    assert parse_mirrors("index.docker.io=m:1") == {"docker.io": "m:1"}
    assert parse_mirrors("") == {}
    for bad in ("docker.io", "docker.io=", "docker.io=http://x", "=x"):
        with pytest.raises(ValueError):
            parse_mirrors(bad)
