"""Kubernetes' rule for a container's process from its image (Entrypoint, Cmd, Env, WorkingDir),
the image configuration read from OCI JSON, and imagePullSecrets."""

from __future__ import annotations

import base64
import json

import pytest

from interlink_provider.images import command
from interlink_provider.images.cache import PullPolicy, default_policy
from interlink_provider.images.config import ImageConfig
from interlink_provider.images.credentials import auth_for, basic, parse_dockerconfigjson, registry_key
from interlink_provider.images.reference import parse
from interlink_provider.images.tools import tool_message

IMAGE = ImageConfig(
    entrypoint=("/bin/echo", "from-entrypoint"),
    cmd=("default-arg",),
    env=("PATH=/bin", "GREETING=image", "EMPTY="),
    working_dir="/work",
)


@pytest.mark.parametrize(
    ("cmd", "args", "expected"),
    [
        (None, None, ("/bin/echo", "from-entrypoint", "default-arg")),  # neither: ENTRYPOINT + CMD
        ([], [], ("/bin/echo", "from-entrypoint", "default-arg")),  # empty lists are "not given"
        (None, ["a", "b"], ("/bin/echo", "from-entrypoint", "a", "b")),  # args: ENTRYPOINT + args
        (["/bin/sh"], None, ("/bin/sh",)),  # command: the image's both ignored
        (["/bin/sh", "-c"], ["echo hi"], ("/bin/sh", "-c", "echo hi")),  # command + args
    ],
)
def test_kubernetes_command_rule(cmd, args, expected):
    assert command.argv(IMAGE, cmd, args) == expected


def test_image_without_entrypoint():
    image = ImageConfig(cmd=("sh",))
    assert command.argv(image, None, None) == ("sh",)
    assert command.argv(image, None, ["-c", "true"]) == ("-c", "true")  # args replace Cmd, no Entrypoint
    with pytest.raises(command.NoCommand):
        command.argv(ImageConfig(), None, None)
    with pytest.raises(command.NoCommand):
        command.argv(ImageConfig(), [], [])


def test_empty_lists_fall_back_to_the_image():
    assert command.argv(ImageConfig(cmd=("sh",)), None, []) == ("sh",)


def test_environment_and_working_dir():
    assert command.environment(IMAGE, None) == {"PATH": "/bin", "GREETING": "image", "EMPTY": ""}
    env = command.environment(IMAGE, {"GREETING": "pod", "EXTRA": "1"})
    assert env == {"PATH": "/bin", "GREETING": "pod", "EMPTY": "", "EXTRA": "1"}
    assert command.working_dir(IMAGE, None) == "/work"
    assert command.working_dir(IMAGE, "/data") == "/data"
    assert command.working_dir(ImageConfig(), "") == "/"
    process = command.process(IMAGE, env={"GREETING": "pod"}, workdir="/tmp")
    assert process == command.Process(IMAGE.entrypoint + IMAGE.cmd, {**IMAGE.env_map(), "GREETING": "pod"}, "/tmp")


def test_image_config_from_oci_json():
    blob = {
        "architecture": "amd64",
        "config": {
            "Entrypoint": ["/bin/echo"],
            "Cmd": None,
            "Env": ["A=1", "A=2", "B=x=y"],
            "WorkingDir": "/w",
            "User": "1000:1000",
            "Labels": {"org.opencontainers.image.title": "t"},
        },
    }
    config = ImageConfig.from_oci(blob)
    assert config.entrypoint == ("/bin/echo",) and config.cmd == ()
    assert config.env_map() == {"A": "2", "B": "x=y"}
    assert (config.working_dir, config.user) == ("/w", "1000:1000")
    assert ImageConfig.from_json(config.to_json()) == config
    assert ImageConfig.from_oci({"architecture": "amd64"}) == ImageConfig()
    for bad in ([], {"config": []}, {"config": {"Cmd": "sh"}}, {"config": {"Env": [1]}}):
        with pytest.raises(ValueError):
            ImageConfig.from_oci(bad)


def test_default_pull_policy_is_kubernetes():
    assert default_policy(parse("busybox")) is PullPolicy.ALWAYS
    assert default_policy(parse("busybox:latest")) is PullPolicy.ALWAYS
    assert default_policy(parse("busybox:1.36")) is PullPolicy.IF_NOT_PRESENT
    assert default_policy(parse("busybox@sha256:" + "a" * 64)) is PullPolicy.IF_NOT_PRESENT


def test_pull_secrets():
    secret = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p").decode()},
                "registry.example:5000": {"username": "robot", "password": "s3cret"},
            }
        }
    )
    parsed = parse_dockerconfigjson(secret)
    assert parsed["docker.io"] == basic("u", "p")
    assert base64.b64decode(parsed["registry.example:5000"]["auth"]) == b"robot:s3cret"
    assert auth_for("docker.io", [{}, parsed]) == basic("u", "p")
    assert auth_for("quay.io", [parsed]) is None
    assert registry_key("https://ghcr.io/v2/") == "ghcr.io"
    for bad in ("{}", '{"auths": {"x": "y"}}', '{"auths": {"x": {}}}'):
        with pytest.raises(ValueError):
            parse_dockerconfigjson(bad)


def test_tool_message_is_the_registry_reason():
    stderr = (
        'time="2026-12-03T21:00:00Z" level=fatal msg="Error parsing image name \\"docker://h/x:1\\": '
        'reading manifest 1 in h/x: manifest unknown: manifest unknown"\n'
    )
    assert tool_message(stderr) == (
        'Error parsing image name "docker://h/x:1": reading manifest 1 in h/x: manifest unknown: manifest unknown'
    )
    assert tool_message("plain failure\n\n") == "plain failure"
    assert tool_message("") == "failed without a message"
