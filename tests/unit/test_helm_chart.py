"""The Helm chart, checked without a cluster (no kube-apiserver or helm runs here): every value a
template reads exists and is documented, the gateway config it renders is valid, and the VK config
it writes uses only keys the upstream Virtual Kubelet reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from interlink_provider.gateway.config import GatewayConfig

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "interlink-provider"
# interLink's VK config keys (research/interlink.md §7)
VK_KEYS = set(
    """InterlinkURL InterlinkPort KubernetesApiAddr KubernetesApiPort KubernetesApiCaCrt
DisableProjectedVolumes JobScriptBuilderURL VKConfigPath VKTokenFile ServiceAccount Namespace PodIP PodCIDR
VerboseLogging ErrorsOnlyLogging HTTP KubeletHTTP KubeletCertFile KubeletKeyFile KubeletCSRSignerName Resources
NodeLabels NodeTaints TLS Network SkipDownwardAPIResolution DisableCSR Pprof""".split()
)


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in (CHART / "templates").iterdir()}


def test_every_value_a_template_reads_is_in_values_yaml():
    defaults = values()
    for name, text in templates().items():
        for path in set(re.findall(r"\.Values((?:\.\w+)+)", text)):
            node = defaults
            for key in path.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{name} reads .Values{path}, not in values.yaml"
                node = node[key]


def test_the_rendered_gateway_config_is_valid():
    config = values()["gateway"]["config"]
    # what templates/_helpers.tpl adds
    config["listen"] = {"socket": "/var/run/interlink/gateway.sock"}
    config["identity"]["client_secret_file"] = "/etc/interlink-provider/secret/client-secret"
    parsed = GatewayConfig.model_validate(config)
    assert parsed.sites[0].ca_file.startswith("/etc/interlink-provider/sites/")
    helpers = templates()["_helpers.tpl"]
    assert '"listen" (dict "socket" "/var/run/interlink/gateway.sock")' in helpers
    assert '"client_secret_file" "/etc/interlink-provider/secret/client-secret"' in helpers


def test_the_vk_config_uses_only_keys_the_virtual_kubelet_reads():
    text = templates()["configmaps.yaml"]
    block = text.split("InterLinkConfig.yaml: |", 1)[1].split("---", 1)[0]
    top_level = set(re.findall(r"^    ([A-Za-z]+):", block, re.M))
    assert top_level and top_level <= VK_KEYS, top_level - VK_KEYS
    assert 'InterlinkURL: "unix:///var/run/interlink/gateway.sock"' in block


def test_the_vk_and_the_gateway_share_the_socket_and_the_secret_is_mounted():
    deployment = templates()["deployment.yaml"]
    assert deployment.count("{name: sockets, mountPath: /var/run/interlink}") == 2  # both containers
    assert "mountPath: /etc/interlink-provider/secret" in deployment and "defaultMode: 0400" in deployment
    assert "--health" in deployment  # readiness asks the gateway whether a site is up


def test_values_are_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    sections = [i for i, line in enumerate(lines) if re.match(r"^[a-zA-Z]\w*:", line)]
    for index in sections:
        assert index > 0 and lines[index - 1].startswith("#"), f"values.yaml: {lines[index]} has no comment"
