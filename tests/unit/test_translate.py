"""Pod -> JobSpec: Kubernetes semantics and every refusal, without a site."""

from __future__ import annotations

import base64
import copy

import pytest

from interlink_provider.pods import validate
from interlink_provider.pods.expansion import expand
from interlink_provider.pods.policy import Flavor, TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData

BASE = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "0b6e6c5e-2c1d-4a51-9b0f-1f2e3d4c5b6a"},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]},
}


def request(pod_changes=None, retrieved=None, **spec_changes):
    """A create request; keyword arguments replace pod.spec fields."""
    pod = copy.deepcopy(BASE)
    pod["spec"].update(spec_changes)
    if pod_changes:
        pod["metadata"].update(pod_changes)
    return RetrievedPodData.model_validate({"pod": pod, "container": retrieved or []})


def translate(data, policy=None):
    return pod_to_jobspec(data, policy or TranslationPolicy())


def rejected(data, policy=None) -> PodRejected:
    with pytest.raises(PodRejected) as info:
        translate(data, policy)
    return info.value


# ------------------------------------------------------------------ go wire quirks


def test_go_nulls_are_empty_lists_and_missing_env_values_are_empty():
    data = RetrievedPodData.model_validate(
        {
            "pod": {
                "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": None, "labels": None},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "command": ["true"],
                            "args": None,
                            "env": [{"name": "EMPTY"}],
                            "volumeMounts": None,
                        }
                    ],
                    "initContainers": None,
                    "volumes": None,
                },
            },
            "container": None,
        }
    )
    spec = translate(data)
    assert spec.containers[0].args == ()
    assert ("EMPTY", "") in spec.containers[0].env
    assert spec.init_containers == ()


def test_init_containers_first_and_restart_policies():
    data = request(
        initContainers=[{"name": "i1", "image": "x", "command": ["a"]}, {"name": "i2", "image": "x", "command": ["b"]}],
        restartPolicy="OnFailure",
    )
    spec = translate(data)
    assert [c.name for c in spec.all_containers()] == ["i1", "i2", "main"]
    assert [c.is_init for c in spec.all_containers()] == [True, True, False]
    assert spec.init_containers[0].restart_policy == "OnFailure"
    assert spec.containers[0].restart_policy == "OnFailure"
    never = translate(request(initContainers=[{"name": "i", "image": "x", "command": ["a"]}]))
    assert never.init_containers[0].restart_policy == "Never"


# ------------------------------------------------------------------ resources


def test_resources_sum_apps_and_max_with_init_from_limits_else_requests():
    data = request(
        initContainers=[
            {"name": "i", "image": "x", "command": ["a"], "resources": {"limits": {"cpu": "3", "memory": "3Gi"}}}
        ],
        containers=[
            {"name": "a", "image": "x", "command": ["a"], "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "b", "image": "x", "command": ["a"], "resources": {"requests": {"cpu": "1.2", "memory": "2Gi"}}},
        ],
    )
    res = translate(data).resources
    assert res.cpus == 3  # max(3, ceil(0.5 + 1.2) = 2)
    assert res.memory_mib == 3 * 1024  # max(3Gi, 1Gi + 2Gi)
    assert res.cpus_from_pod and res.memory_from_pod


def test_defaults_come_from_the_flavor_when_the_pod_asks_nothing():
    policy = TranslationPolicy(flavors={"default": Flavor(cpu_default=2, memory_default="768Mi")})
    res = translate(request(), policy).resources
    assert (res.cpus, res.memory_mib, res.gpus) == (2, 768, 0)
    assert not res.cpus_from_pod and not res.memory_from_pod


def test_gpus_pick_the_gpu_flavor_and_are_counted():
    policy = TranslationPolicy(flavors={"default": Flavor(), "gpu": Flavor(gpus=4, memory_default="2Gi")})
    data = request(
        containers=[{"name": "t", "image": "x", "command": ["a"], "resources": {"limits": {"nvidia.com/gpu": 2}}}]
    )
    spec = translate(data, policy)
    assert spec.flavor == "gpu"
    assert spec.resources.gpus == 2 and spec.resources.gpu_vendor == "nvidia"
    assert spec.containers[0].gpus == 2
    assert spec.resources.memory_mib == 2048


def test_fractional_gpus_and_mixed_vendors_are_refused():
    frac = request(
        containers=[{"name": "t", "image": "x", "command": ["a"], "resources": {"limits": {"nvidia.com/gpu": "0.5"}}}]
    )
    assert "whole numbers" in rejected(frac).reason
    mixed = request(
        containers=[
            {"name": "a", "image": "x", "command": ["a"], "resources": {"limits": {"nvidia.com/gpu": 1}}},
            {"name": "b", "image": "x", "command": ["a"], "resources": {"limits": {"amd.com/gpu": 1}}},
        ]
    )
    assert "mix" in rejected(mixed).reason


def test_bad_quantity_is_refused_with_the_field():
    data = request(
        containers=[{"name": "a", "image": "x", "command": ["a"], "resources": {"limits": {"memory": "lots"}}}]
    )
    error = rejected(data)
    assert "invalid quantity" in error.reason and "resources" in error.field


def test_unknown_flavor_annotation_is_refused():
    error = rejected(request({"annotations": {"slurm-job.vk.io/flavor": "huge"}}))
    assert "flavor 'huge'" in error.reason and "default" in error.reason


# ------------------------------------------------------------------ env


def test_env_expansion_follows_kubernetes():
    assert expand("$(A)-$(B)-$$(A)-$(MISSING)-$$-$x", {"A": "1", "B": "2"}) == "1-2-$(A)-$(MISSING)-$-$x"
    assert expand("$(unterminated", {"unterminated": "x"}) == "$(unterminated"
    data = request(
        containers=[
            {
                "name": "a",
                "image": "x",
                "command": ["echo", "$(GREETING)"],
                "args": ["$(HOSTNAME)"],
                "env": [{"name": "NAME", "value": "world"}, {"name": "GREETING", "value": "hello $(NAME)"}],
            }
        ]
    )
    c = translate(data).containers[0]
    assert c.command == ("echo", "hello world") and c.args == ("p",)


def test_env_from_and_value_from_left_unresolved_by_the_vk_are_resolved_from_sent_objects():
    secret = {"metadata": {"name": "s"}, "data": {"TOKEN": base64.b64encode(b"t0k").decode()}}
    cm = {"metadata": {"name": "cm"}, "data": {"MODE": "fast", "OTHER": "x"}}
    data = RetrievedPodData.model_validate(
        {
            "pod": {
                **BASE,
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "x",
                            "command": ["a"],
                            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CFG_"}],
                            "env": [
                                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "TOKEN"}}},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "CFG_MODE", "value": "explicit wins"},
                            ],
                        }
                    ]
                },
            },
            "container": [{"name": "a", "configMaps": [cm], "secrets": [secret]}],
        }
    )
    env = dict(translate(data).containers[0].env)
    assert env["T"] == "t0k" and env["POD"] == "p" and env["CFG_OTHER"] == "x"
    assert env["CFG_MODE"] == "explicit wins"


def test_unresolvable_secret_reference_is_refused_clearly():
    data = request(
        containers=[
            {
                "name": "a",
                "image": "x",
                "command": ["a"],
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}],
            }
        ]
    )
    error = rejected(data)
    assert "Secret 'nope'" in error.reason and error.field.endswith("env[0]")


@pytest.mark.parametrize("name", ["", "A=B", "A\nB"])
def test_invalid_env_names_are_refused(name):
    data = request(containers=[{"name": "a", "image": "x", "command": ["a"], "env": [{"name": name, "value": "v"}]}])
    assert "name" in rejected(data).reason


def test_nul_bytes_are_refused_in_arguments_and_values():
    assert "NUL" in rejected(request(containers=[{"name": "a", "image": "x", "command": ["a\x00b"]}])).reason
    data = request(containers=[{"name": "a", "image": "x", "command": ["a"], "env": [{"name": "X", "value": "a\x00"}]}])
    assert "NUL" in rejected(data).reason


# ------------------------------------------------------------------ names and paths


@pytest.mark.parametrize("uid", ["../../etc", "a/b", "", "x" * 200, ".."])
def test_unsafe_uids_are_refused(uid):
    assert rejected(request({"uid": uid})).field == "metadata.uid"


@pytest.mark.parametrize("name", ["UPPER", "a_b", "-a", "a" * 64, "a/b"])
def test_container_names_must_be_dns_labels(name):
    data = request(containers=[{"name": name, "image": "x", "command": ["a"]}])
    assert rejected(data).field == "spec.containers[0].name"


def test_duplicate_container_and_volume_names_are_refused():
    assert "twice" in rejected(request(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "x"}])).reason
    vols = [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]
    assert "twice" in rejected(request(volumes=vols)).reason


def _mounting(mount, volume=None, containers_data=None):
    volume = volume or {"name": "v", "emptyDir": {}}
    return RetrievedPodData.model_validate(
        {
            "pod": {
                **BASE,
                "spec": {
                    "volumes": [volume],
                    "containers": [
                        {"name": "a", "image": "x", "command": ["a"], "volumeMounts": [{"name": "v", **mount}]}
                    ],
                },
            },
            "container": containers_data or [],
        }
    )


@pytest.mark.parametrize("path", ["relative", "/a/../../etc", "/", "/proc/x", "/dev", "/a:b", "/a,b", "/a\nb"])
def test_unsafe_mount_paths_are_refused(path):
    error = rejected(_mounting({"mountPath": path}))
    assert "mountPath" in error.field


@pytest.mark.parametrize("sub", ["../x", "a/../../x", "/abs", "a/..", "a\x01"])
def test_unsafe_sub_paths_are_refused(sub):
    error = rejected(_mounting({"mountPath": "/m", "subPath": sub}))
    assert error.field.endswith("subPath")


def test_configmap_item_paths_and_keys_cannot_escape():
    cm = {"metadata": {"name": "cm"}, "data": {"k": "v", "..": "x"}}
    volume = {"name": "v", "configMap": {"name": "cm"}}
    error = rejected(_mounting({"mountPath": "/m"}, volume, [{"name": "a", "configMaps": [cm]}]))
    assert "not a valid ConfigMap/Secret key" in error.reason
    cm_ok = {"metadata": {"name": "cm"}, "data": {"k": "v"}}
    for path in ("../evil", "/etc/passwd", "a/../../b"):
        volume = {"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": path}]}}
        error = rejected(_mounting({"mountPath": "/m"}, volume, [{"name": "a", "configMaps": [cm_ok]}]))
        assert "path" in error.field


def test_volume_files_modes_and_sensitivity():
    secret = {"metadata": {"name": "s"}, "data": {"key": base64.b64encode(b"secret").decode()}}
    cm = {"metadata": {"name": "cm"}, "data": {"conf": "a=1"}}
    data = RetrievedPodData.model_validate(
        {
            "pod": {
                **BASE,
                "spec": {
                    "volumes": [
                        {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0o644}},
                        {
                            "name": "cfg",
                            "configMap": {"name": "cm", "items": [{"key": "conf", "path": "sub/app.conf"}]},
                        },
                        {"name": "proj", "projected": {"sources": []}},
                    ],
                    "containers": [
                        {
                            "name": "a",
                            "image": "x",
                            "command": ["a"],
                            "volumeMounts": [
                                {"name": "sec", "mountPath": "/s"},
                                {"name": "cfg", "mountPath": "/c"},
                                {"name": "proj", "mountPath": "/p"},
                            ],
                        }
                    ],
                },
            },
            "container": [
                {
                    "name": "a",
                    "secrets": [secret],
                    "configMaps": [cm],
                    "projectedvolumemaps": [{"metadata": {"name": "proj"}, "data": {"ca.crt": "-----BEGIN-----\nX\n"}}],
                }
            ],
        }
    )
    volumes = {v.name: v for v in translate(data).volumes}
    assert volumes["sec"].sensitive and volumes["sec"].files[0].mode == 0o600  # group/other bits dropped
    assert volumes["sec"].files[0].content == b"secret"
    assert volumes["cfg"].files[0].path == "sub/app.conf" and volumes["cfg"].files[0].mode == 0o644
    assert volumes["proj"].files[0].content == b"-----BEGIN-----\nX\n"  # newlines preserved


def test_missing_mounted_configmap_is_refused_but_optional_is_empty():
    volume = {"name": "v", "configMap": {"name": "gone"}}
    assert "was not sent" in rejected(_mounting({"mountPath": "/m"}, volume)).reason
    optional = {"name": "v", "configMap": {"name": "gone", "optional": True}}
    assert translate(_mounting({"mountPath": "/m"}, optional)).volumes[0].files == ()


def test_host_path_needs_the_site_allowlist():
    volume = {"name": "v", "hostPath": {"path": "/scratch/data", "type": "Directory"}}
    assert "outside" in rejected(_mounting({"mountPath": "/d"}, volume)).reason
    policy = TranslationPolicy(host_path_allow=["/scratch"])
    assert translate(_mounting({"mountPath": "/d"}, volume), policy).volumes[0].host_path == "/scratch/data"
    sneaky = {"name": "v", "hostPath": {"path": "/scratch-other"}}
    assert "outside" in rejected(_mounting({"mountPath": "/d"}, sneaky), policy).reason


def test_unsupported_mounted_volume_types_are_refused_unmounted_ignored():
    pvc = {"name": "v", "persistentVolumeClaim": {"claimName": "c"}}
    assert "persistentVolumeClaim" in rejected(_mounting({"mountPath": "/d"}, pvc)).reason
    unmounted = request(volumes=[pvc])
    assert translate(unmounted).volumes == ()


def test_volume_size_limit_applies():
    cm = {"metadata": {"name": "cm"}, "data": {"big": "x" * 2000}}
    volume = {"name": "v", "configMap": {"name": "cm"}}
    policy = TranslationPolicy(max_volume_bytes=1000)
    assert (
        "exceed" in rejected(_mounting({"mountPath": "/m"}, volume, [{"name": "a", "configMaps": [cm]}]), policy).reason
    )


# ------------------------------------------------------------------ handlers and misc


def test_probes_and_hooks_resolve_named_ports():
    data = request(
        containers=[
            {
                "name": "web",
                "image": "x",
                "command": ["serve"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "ready", "port": "http"}, "periodSeconds": 3},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "lifecycle": {
                    "preStop": {"exec": {"command": ["sh", "-c", "echo bye"]}},
                    "postStart": {"sleep": {"seconds": 2}},
                },
            }
        ]
    )
    c = translate(data).containers[0]
    assert c.readiness_probe.handler.port == 8080 and c.readiness_probe.handler.path == "/ready"
    assert c.readiness_probe.period == 3
    assert c.liveness_probe.handler.kind == "tcp"
    assert c.pre_stop.command == ("sh", "-c", "echo bye") and c.post_start.seconds == 2
    bad = request(containers=[{"name": "w", "image": "x", "readinessProbe": {"httpGet": {"port": "nope"}}}])
    assert "named port" in rejected(bad).reason


def test_grace_period_and_deadline():
    spec = translate(request(terminationGracePeriodSeconds=9999, activeDeadlineSeconds=90))
    assert spec.grace_seconds == 300 and spec.deadline_seconds == 90


def test_sidecar_init_containers_are_refused_for_now():
    data = request(initContainers=[{"name": "s", "image": "x", "command": ["a"], "restartPolicy": "Always"}])
    assert "sidecar" in rejected(data).reason


# ------------------------------------------------------------------ names end where they end


@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
@pytest.mark.parametrize("tail", ["\n", "\r", "\x00", "\nrm -rf /"])
def test_a_pod_name_namespace_or_uid_with_a_line_break_or_control_character_is_refused(field, tail):
    """`re.match` with `$` lets a trailing newline through: `p\\n` split the batch script's
    header comment into a command line. Every name check matches the whole value."""
    metadata = {**BASE["metadata"]}
    metadata[field] += tail
    assert "not a valid" in rejected(request(metadata)).reason


@pytest.mark.parametrize(
    "check, value",
    [
        (validate.dns_label, "c\n"),
        (validate.dns_subdomain, "p.q\n"),
        (validate.pod_uid, "u-1\n"),
        (validate.config_key, "key\n"),
    ],
)
def test_every_name_check_refuses_a_trailing_newline(check, value):
    with pytest.raises(PodRejected):
        check(value, "f")
    assert check(value.rstrip("\n"), "f") == value.rstrip("\n")


def test_a_did_or_url_with_a_trailing_newline_is_refused():
    from interlink_provider.pods.staging import parse_did

    with pytest.raises(ValueError):
        parse_did("scope:name\n")
    assert parse_did("scope:name") == ("scope", "name")
