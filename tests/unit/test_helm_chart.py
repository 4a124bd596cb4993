"""The Helm chart, checked without a cluster (no kube-apiserver or helm runs here): every value a
template reads exists and is documented, the gateway config it renders is valid, and the VK config
it writes uses only keys the upstream Virtual Kubelet reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

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
    assert '$listen := dict "socket" "/var/run/interlink/gateway.sock"' in helpers
    assert '"client_secret_file" "/etc/interlink-provider/secret/client-secret"' in helpers


# what templates/_helpers.tpl puts in `listen` with gateway.tcp.enabled (and clientCA, a token Secret)
TCP_LISTEN = {
    "host": "0.0.0.0",
    "tls_cert": "/etc/interlink-provider/listen-tls/tls.crt",
    "tls_key": "/etc/interlink-provider/listen-tls/tls.key",
    "client_ca": "/etc/interlink-provider/listen-tls/ca.crt",
    "token_file": "/etc/interlink-provider/listen-token/token",
}


def test_the_tcp_listener_the_chart_renders_is_valid_and_its_files_are_mounted():
    tcp = values()["gateway"]["tcp"]
    assert tcp["enabled"] is False  # off by default: the VK beside the gateway uses the socket
    helpers, deployment = templates()["_helpers.tpl"], templates()["deployment.yaml"]
    for key, path in TCP_LISTEN.items():
        assert f'set $listen "{key}" "{path}"' in helpers, key
        if path.startswith("/"):
            assert f"mountPath: {path.rsplit('/', 1)[0]}, readOnly: true" in deployment, path
    config = values()["gateway"]["config"]
    config["identity"]["client_secret_file"] = "/etc/interlink-provider/secret/client-secret"
    listen = {"socket": "/var/run/interlink/gateway.sock", "port": tcp["port"], **TCP_LISTEN}
    for protection in ("client_ca", "token_file"):  # either one is enough for the gateway
        rest = {k: v for k, v in listen.items() if k != protection}
        assert GatewayConfig.model_validate({**config, "listen": rest}).listen.host == "0.0.0.0"
    # the combinations the chart refuses to render, the gateway refuses to load
    anonymous = {k: v for k, v in listen.items() if k not in ("client_ca", "token_file")}
    with pytest.raises(ValidationError, match="no authentication"):
        GatewayConfig.model_validate({**config, "listen": anonymous})
    assert 'fail "gateway.tcp.enabled needs gateway.tcp.tls.existingSecret' in helpers
    assert (
        'fail "gateway.tcp.enabled needs gateway.tcp.tls.clientCA: true or gateway.tcp.token.existingSecret' in helpers
    )


def test_the_tcp_listener_has_a_port_a_service_and_secrets_readable_by_the_gateway_only():
    deployment, service = templates()["deployment.yaml"], templates()["service.yaml"]
    assert "containerPort: {{ .Values.gateway.tcp.port }}" in deployment
    assert "targetPort: interlink-api" in service and "{name: interlink-api, containerPort" in deployment
    assert "if and .Values.gateway.tcp.enabled .Values.gateway.tcp.service" in service
    token_volume = deployment.split("- name: listen-token", 1)[1].split("- name:", 1)[0]
    assert "defaultMode: 0400" in token_volume and "path: token" in token_volume


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
