"""The gateway's pure parts: routing, the API server's split of a create request, status conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlink_provider.gateway.config import SiteLink
from interlink_provider.gateway.routing import NoSite, SiteState, choose_site
from interlink_provider.gateway.server import aggregate
from interlink_provider.pods import manifest
from interlink_provider.pods.gang import gang_key
from interlink_provider.pods.retrieve import from_create_request
from interlink_provider.rpc.convert import container_status, container_status_json
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb

SITES = [
    SiteLink(name="alpha", target="a:1", audience="x", labels={"site": "alpha", "gpu": "a100"}),
    SiteLink(name="beta", target="b:1", audience="x", labels={"site": "beta", "gpu": "a100"}),
    SiteLink(name="gamma", target="c:1", audience="x", labels={"site": "gamma"}),
]
UP = {"alpha": SiteState(True, 5), "beta": SiteState(True, 50), "gamma": SiteState(True, 500)}
ANNOTATION = "interlink.provider/site"


def pod(annotations=None, selector=None) -> dict:
    return {"metadata": {"annotations": annotations or {}}, "spec": {"nodeSelector": selector or {}}}


def test_a_named_site_wins_and_an_unknown_name_is_refused():
    assert choose_site(pod({ANNOTATION: "alpha"}), SITES, UP, ANNOTATION).name == "alpha"
    with pytest.raises(NoSite, match="names no site"):
        choose_site(pod({ANNOTATION: "delta"}), SITES, UP, ANNOTATION)


def test_selectors_pick_sites_then_free_capacity_then_being_up():
    assert choose_site(pod(selector={"gpu": "a100"}), SITES, UP, ANNOTATION).name == "beta"  # most free of two
    assert choose_site(pod(), SITES, UP, ANNOTATION).name == "gamma"
    down = {**UP, "gamma": SiteState(False, 500)}
    assert choose_site(pod(), SITES, down, ANNOTATION).name == "beta"
    # selectors no site labels (e.g. the virtual node's own) are not the gateway's to judge
    assert (
        choose_site(pod(selector={"kubernetes.io/role": "agent", "site": "alpha"}), SITES, UP, ANNOTATION).name
        == "alpha"
    )
    with pytest.raises(NoSite, match="gpu=h100"):
        choose_site(pod(selector={"gpu": "h100"}), SITES, UP, ANNOTATION)


def test_a_gang_s_members_go_where_the_gang_went_else_to_the_site_its_name_draws():
    gang = {"interlink.provider/gang": "train", "interlink.provider/gang-size": "4"}
    member = {"metadata": {"namespace": "ns", "annotations": gang}, "spec": {}}
    key = gang_key(member)
    assert key == "ns/train" and gang_key(pod()) == "" and gang_key(pod({"interlink.provider/gang": "x"})) == ""
    drawn = choose_site(member, SITES, UP, ANNOTATION, key).name
    # Not the most free site: the same one for every member, whatever the loads say meanwhile.
    loads = [UP, {**UP, "alpha": SiteState(True, 9000)}, {**UP, "beta": SiteState(True, 9000)}]
    assert {choose_site(member, SITES, states, ANNOTATION, key).name for states in loads} == {drawn}
    others = {choose_site(member, SITES, UP, ANNOTATION, f"ns/g{i}").name for i in range(20)}
    assert len(others) > 1  # gangs spread over the sites
    assert choose_site(member, SITES, UP, ANNOTATION, key, gang_site="alpha").name == "alpha"
    down = {**UP, drawn: SiteState(False, 500)}
    assert choose_site(member, SITES, down, ANNOTATION, key).name != drawn


def test_a_vk_create_request_becomes_what_the_api_server_would_send():
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "ns"},
        "data": {"a": "1"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sec", "namespace": "ns"},
        "data": {"k": "dg=="},
    }
    manifests = manifest.Manifests(config_maps={("ns", "cfg"): config}, secrets={("ns", "sec"): secret})
    the_pod = {
        "metadata": {"name": "p"},
        "spec": {
            "volumes": [
                {"name": "c", "configMap": {"name": "cfg"}},
                {"name": "s", "secret": {"secretName": "sec"}},
                {"name": "d", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            ],
            "initContainers": [{"name": "init", "image": "x", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
            "containers": [
                {
                    "name": "app",
                    "image": "x",
                    "volumeMounts": [{"name": "c", "mountPath": "/c"}, {"name": "d", "mountPath": "/d"}],
                }
            ],
        },
    }
    expected = manifest.create_request(the_pod, manifests, namespace="ns")
    containers = expected["container"]
    vk = {
        "pod": expected["pod"],
        "configmaps": [config],
        "secrets": [o for c in containers for o in c["secrets"]],
        "projectedvolumesmaps": [o for c in containers for o in c["projectedvolumemaps"]],
    }
    assert from_create_request(vk) == expected


def test_container_statuses_survive_the_trip_through_grpc():
    statuses = [
        {
            "name": "a",
            "image": "busybox",
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 2,
            "state": {
                "terminated": {
                    "exitCode": 137,
                    "reason": "OOMKilled",
                    "message": "m",
                    "startedAt": "2026-11-23T10:00:00Z",
                    "finishedAt": "2026-11-23T10:00:05Z",
                }
            },
            "lastState": {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": "2026-11-23T09:59:00Z",
                    "finishedAt": "2026-11-23T09:59:30Z",
                }
            },
        },
        {
            "name": "b",
            "image": "x",
            "imageID": "",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}},
        },
        {
            "name": "c",
            "image": "x",
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "StagingIn", "message": "staging in: 1/2 files"}},
        },
    ]
    for status in statuses:
        assert container_status_json(container_status(status)) == status


def test_the_virtual_node_sums_its_sites():
    def node(cpu, memory, pods, gpus, taint):
        return pb.NodeInfo(
            capacity=pb.Resources(cpu=cpu, memory=memory, pods=pods),
            accelerators=[pb.Accelerator(resource_type="nvidia.com/gpu", available=gpus)],
            taints=[pb.Taint(key=taint, effect="NoSchedule")],
        )

    ping = aggregate([node("4", "8000Mi", "100", 2, "a"), node("500m", "1Gi", "10", 1, "a")])
    assert ping.resources.cpu == "4500m" and ping.resources.memory == "9024Mi" and ping.resources.pods == "110"
    assert [(a.resourceType, a.available) for a in ping.resources.accelerators] == [("nvidia.com/gpu", "3")]
    assert [t.key for t in ping.taints] == ["a"]


def test_the_example_gateway_config_is_valid_and_documents_every_key(tmp_path):
    from interlink_provider.gateway.config import GatewayConfig, load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
    config = load_config(example)
    assert [s.name for s in config.sites] == ["hpc-a", "hpc-b"]
    text = example.read_text()
    models = [
        GatewayConfig,
        *(f.annotation for f in GatewayConfig.model_fields.values() if hasattr(f.annotation, "model_fields")),
    ]
    for model in models:
        for key in model.model_fields:
            assert f"{key}:" in text, f"examples/gateway.yaml does not document {key}"
    for key in SiteLink.model_fields:
        assert f"{key}:" in text


def test_secret_paths_may_come_from_systemd_credentials(tmp_path, monkeypatch):
    from interlink_provider.gateway.config import load_config

    example = (Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml").read_text()
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        example.replace("/etc/interlink-provider/gateway-secret", "${CREDENTIALS_DIRECTORY}/gateway-secret")
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/interlink-provider-gateway.service")
    assert (
        load_config(config_file).identity.client_secret_file
        == "/run/credentials/interlink-provider-gateway.service/gateway-secret"
    )


def test_the_systemd_units_start_commands_that_exist():
    import configparser
    import shlex

    from interlink_provider.cli.main import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    units = sorted((Path(__file__).resolve().parents[2] / "deploy" / "systemd").glob("*.service"))
    assert len(units) == 2
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        argv = shlex.split(parser["Service"]["ExecStart"])
        assert argv[0].endswith("/interlink-provider") and argv[1] in commands and "--config" in argv
        assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_an_unset_variable_in_a_path_is_an_error_naming_it_and_the_key(tmp_path, monkeypatch):
    from interlink_provider.gateway.config import load_config

    example = (Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml").read_text()
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(example.replace("/etc/interlink-provider/hpc-b-ca.pem", "$ILP_TEST_UNSET/hpc-b-ca.pem"))
    monkeypatch.delenv("ILP_TEST_UNSET", raising=False)
    with pytest.raises(ValueError, match=r"sites\[1\]\.ca_file: .*\$ILP_TEST_UNSET, which is not set"):
        load_config(config_file)
    with pytest.raises(ValueError, match=r"sites\[1\]\.ca_file"):
        load_config(config_file, {})
    assert load_config(config_file, {"ILP_TEST_UNSET": "/pki"}).sites[1].ca_file == "/pki/hpc-b-ca.pem"
