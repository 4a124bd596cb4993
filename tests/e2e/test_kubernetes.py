"""A real Kubernetes control plane in the loop (deploy/local/k8s.sh: etcd, kube-apiserver,
kube-scheduler, kube-controller-manager, kubectl and helm, built here from their Go modules).

- the control plane is real: /readyz, objects written and read back, a service-account token
  from the TokenRequest API whose claims are checked and which the API server authenticates;
- a virtual node registered as interLink's Virtual Kubelet registers it, and the vk-test-set's
  own pod template scheduled onto it by the real kube-scheduler (a Job's pod too, made by the
  real Job controller); a pod without the toleration is not;
- our Helm chart, rendered by helm and accepted by the real API server (`--dry-run=server`),
  and its RBAC giving the Virtual Kubelet's service account what it needs.

No kubelet runs and neither does interLink's Virtual Kubelet (its Go module is not served to
this machine: README "Limitations"): scheduled pods stay Pending. The fixture starts the control
plane if it is not running (the first start builds it, see deploy/local/k8s.sh) and stops it
afterwards if it started it (not with ILP_KEEP_SITE set). All of it is in this one file, so
`pytest -n 3 --dist loadfile` runs it in one worker.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.helpers import REPO

K8S_SCRIPT = REPO / "deploy" / "local" / "k8s.sh"
CHART = REPO / "deploy" / "helm" / "interlink-provider"
VK_TEST_SET = Path(__file__).parent / "vk-test-set"
VK_CONFIG = yaml.safe_load((VK_TEST_SET / "config" / "interLink-ci-vktest_config.yaml").read_text())
NODE = VK_CONFIG["target_nodes"][0]  # "virtual-kubelet", the node interLink's CI targets
ISSUER = "https://kubernetes.default.svc.cluster.local"  # deploy/local/k8s.sh

# The first start builds the control plane from source (tens of minutes on 2 cores); every
# command below has its own, shorter time limit.
pytestmark = pytest.mark.timeout(3600)


def _k8s_dir() -> Path:
    return Path(os.environ.get("ILP_K8S_DIR", REPO / ".site" / "k8s"))


def _script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(K8S_SCRIPT), command], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Cluster:
    bin: Path
    kubeconfig: Path

    def kubectl(self, *argv: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
        """kubectl's output; with check=False, whatever it printed on stdout, whatever its exit."""
        done = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(argv)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def get(self, *argv: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.kubectl("get", *argv, "-o", "json"))
        return found

    def apply(self, objects: list[dict[str, Any]] | dict[str, Any], *argv: str) -> str:
        documents = objects if isinstance(objects, list) else [objects]
        return self.kubectl("apply", *argv, "-f", "-", stdin=yaml.safe_dump_all(documents))

    def helm(self, *argv: str) -> str:
        done = subprocess.run([str(self.bin / "helm"), *argv], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"helm {' '.join(argv)}: exit {done.returncode}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    already = "kube-apiserver ready" in _script("status", 60).stdout
    started = _script("start", 3300)
    if started.returncode != 0:
        pytest.fail(f"deploy/local/k8s.sh start failed:\n{started.stderr}", pytrace=False)
    build = Path(os.environ.get("ILP_K8S_BUILD_DIR", _k8s_dir() / "build"))
    yield Cluster(bin=build / "bin", kubeconfig=_k8s_dir() / "admin.kubeconfig")
    if not already and not os.environ.get("ILP_KEEP_SITE"):
        _script("stop", 120)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"ilp-k8s-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def virtual_node(cluster: Cluster) -> Iterator[str]:
    """The Node interLink's Virtual Kubelet registers (pkg/virtualkubelet NewProviderConfig, and
    the chart's default taint), made by kubectl since no VK runs here; Ready, as a VK whose
    interLink API answers its ping reports it."""
    labels = {
        "alpha.service-controller.kubernetes.io/exclude-balancer": "true",
        "kubernetes.io/os": "virtual-kubelet",
        "kubernetes.io/hostname": NODE,
        "kubernetes.io/role": "agent",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        "virtual-node.interlink/type": "virtual-kubelet",
        "type": "virtual-kubelet",  # virtual-kubelet's node-cli label; pods in interLink plugins' docs select it
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": labels},
        "spec": {
            "providerID": f"external:///{NODE}",
            "taints": [{"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}],
        },
    }
    cluster.apply(node)
    resources = {"cpu": "100", "memory": "3000G", "pods": "10000"}  # the VK's defaults
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {"kubeletVersion": "v0.6.0", "architecture": "virtual-kubelet", "operatingSystem": "linux"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "interLink API reachable",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
    }
    cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    # The API server tainted the new node not-ready (admission TaintNodesByCondition); the node
    # lifecycle controller takes that off now that it reports Ready, and leaves interLink's.
    wait_for(
        "the node lifecycle controller untaints the Ready node",
        lambda: (
            [t["key"] for t in cluster.get("node", NODE)["spec"].get("taints", [])]
            == ["virtual-node.interlink/no-schedule"]
        ),
    )
    yield NODE
    cluster.kubectl("delete", "node", NODE, "--wait=false", check=False)


def wait_for(what: str, probe: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.3)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def pod_template(name: str, namespace: str) -> dict[str, Any]:
    """A vk-test-set template rendered with interLink CI's values, as tests/e2e/test_vk_test_set.py does."""
    values = {**VK_CONFIG["values"], "namespace": namespace, "uuid": uuid.uuid4().hex[:8], "target_node": NODE}
    text = jinja2.Template((VK_TEST_SET / "templates" / name).read_text()).render(**values)
    pod: dict[str, Any] = yaml.safe_load(text.partition("# VALIDATION")[0])
    return pod


def scheduled_node(cluster: Cluster, namespace: str, pod: str) -> str:
    return str(cluster.get("pod", pod, "-n", namespace)["spec"].get("nodeName", ""))


# (a) the control plane is real


def test_the_control_plane_is_real_and_keeps_what_it_is_given(cluster: Cluster, namespace: str):
    assert cluster.kubectl("get", "--raw", "/readyz").strip() == "ok"
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    secret_value = uuid.uuid4().hex
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": {"site": "hpc-a", "walltime": "3600"},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "credentials", "namespace": namespace},
                "stringData": {"token": secret_value},
            },
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": namespace}},
        ]
    )
    assert cluster.get("configmap", "settings", "-n", namespace)["data"] == {"site": "hpc-a", "walltime": "3600"}
    stored = cluster.get("secret", "credentials", "-n", namespace)
    assert base64.b64decode(stored["data"]["token"]).decode() == secret_value
    assert cluster.get("serviceaccount", "runner", "-n", namespace)["metadata"]["name"] == "runner"
    # the controller-manager's serviceaccount controller gave the namespace its `default` account
    wait_for(
        "the default service account", lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False)
    )


def test_a_projected_service_account_token_from_the_token_request_api(cluster: Cluster, namespace: str):
    cluster.kubectl("create", "serviceaccount", "runner", "-n", namespace)
    token = cluster.kubectl(
        "create", "token", "runner", "-n", namespace, "--audience", "https://hpc-a.example.org", "--duration", "10m"
    ).strip()
    claims = jwt_claims(token)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ["https://hpc-a.example.org"]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:runner"
    assert claims["kubernetes.io"]["namespace"] == namespace
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "runner"
    assert 590 <= claims["exp"] - claims["iat"] <= 610
    # ...and the API server itself accepts its signature (TokenReview)
    review: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["https://hpc-a.example.org"]},
    }
    answer = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)))
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:runner"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    review["spec"]["token"] = forged
    answer = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)))
    assert not answer["status"].get("authenticated")


# (b) the virtual node and the real scheduler


def test_the_virtual_node_is_registered_as_interlinks_vk_registers_it(cluster: Cluster, virtual_node: str):
    node = cluster.get("node", virtual_node)
    assert node["metadata"]["labels"]["kubernetes.io/role"] == "agent"
    assert node["metadata"]["labels"]["virtual-node.interlink/type"] == "virtual-kubelet"
    assert {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    assert node["status"]["allocatable"]["pods"] == "10k"  # 10000, as the API server writes quantities


def test_a_vk_test_set_pod_is_scheduled_onto_the_virtual_node(cluster: Cluster, virtual_node: str, namespace: str):
    pod = pod_template("000-hello-world.yaml", namespace)
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": virtual_node}
    assert pod["spec"]["tolerations"][0]["key"] == "virtual-node.interlink/no-schedule"
    cluster.apply(pod)
    name = pod["metadata"]["name"]
    wait_for(f"{name} bound to {virtual_node}", lambda: scheduled_node(cluster, namespace, name) == virtual_node)
    status = cluster.get("pod", name, "-n", namespace)["status"]
    assert status["phase"] == "Pending"  # no kubelet (and no Virtual Kubelet) runs it
    assert {"type": "PodScheduled", "status": "True"}.items() <= next(
        c for c in status["conditions"] if c["type"] == "PodScheduled"
    ).items()
    events = cluster.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    assert any(e["reason"] == "Scheduled" and virtual_node in e["message"] for e in events)
    # The ServiceAccount admission plugin gave it the projected kube-api-access volume a Virtual
    # Kubelet hands on to the sidecar: a bound token, the cluster's CA (the root-CA publisher's
    # ConfigMap), the namespace.
    spec = cluster.get("pod", name, "-n", namespace)["spec"]
    assert spec["serviceAccountName"] == "default"
    access = next(v for v in spec["volumes"] if v["name"].startswith("kube-api-access-"))
    sources = access["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    ca = wait_for(
        "the kube-root-ca.crt ConfigMap",
        lambda: cluster.kubectl(
            "get", "cm", "kube-root-ca.crt", "-n", namespace, "-o", "jsonpath={.data.ca\\.crt}", check=False
        ),
    )
    assert ca.startswith("-----BEGIN CERTIFICATE-----")


def test_a_pod_without_the_toleration_is_not_scheduled_there(cluster: Cluster, virtual_node: str, namespace: str):
    pod = pod_template("000-hello-world.yaml", namespace)
    del pod["spec"]["tolerations"]
    cluster.apply(pod)
    name = pod["metadata"]["name"]

    def unschedulable() -> dict[str, Any] | None:
        conditions = cluster.get("pod", name, "-n", namespace)["status"].get("conditions", [])
        return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    condition = wait_for(f"{name} found unschedulable", unschedulable)
    assert condition["reason"] == "Unschedulable"
    # the node's one taint (the fixture waited for the not-ready taint to go) is interLink's
    assert "1 node(s) had untolerated taint" in condition["message"], condition["message"]
    assert scheduled_node(cluster, namespace, name) == ""


def test_a_jobs_pod_made_by_the_job_controller_is_scheduled_onto_the_virtual_node(
    cluster: Cluster, virtual_node: str, namespace: str
):
    hello = pod_template("000-hello-world.yaml", namespace)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"annotations": hello["metadata"]["annotations"]}, "spec": hello["spec"]},
        },
    }
    cluster.apply(job)

    def job_pod() -> dict[str, Any] | None:
        pods = cluster.get("pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name=hello")["items"]
        return pods[0] if pods and pods[0]["spec"].get("nodeName") else None

    pod = wait_for("the Job's pod, scheduled", job_pod)
    assert pod["spec"]["nodeName"] == virtual_node
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"


# (c) our Helm chart against the real API server


def render_chart(cluster: Cluster, namespace: str, values: dict[str, Any] | None, tmp_path: Path) -> str:
    argv = ["template", "hpc", str(CHART), "--namespace", namespace]
    if values is not None:
        file = tmp_path / "values.yaml"
        file.write_text(yaml.safe_dump(values))
        argv += ["-f", str(file)]
    return cluster.helm(*argv)


# What README and docs/admin-guide.md show: the TCP listener with TLS, client certificates and a
# token from Secrets, the client secret and the sites' files as existing Secrets, a grants PVC,
# accelerators and node labels.
DOCUMENTED_VALUES: dict[str, Any] = {
    "nodeName": "hpc",
    "virtualNode": {
        "resources": {
            "cpu": "64",
            "memory": "256Gi",
            "pods": "500",
            "accelerators": [{"resourceType": "nvidia.com/gpu", "model": "a100", "available": 4}],
        },
        "nodeLabels": ["site.interlink.provider/federation=yes"],
    },
    "gateway": {
        "tcp": {
            "enabled": True,
            "tls": {"existingSecret": "gateway-tls", "clientCA": True},
            "token": {"existingSecret": "vk-token"},
        },
        "clientSecret": {"existingSecret": "gateway-client-secret"},
        "siteFiles": {"existingSecret": "site-files"},
        "grants": {"persistentVolumeClaim": "gateway-grants"},
    },
}


@pytest.mark.parametrize("values", [None, DOCUMENTED_VALUES], ids=["defaults", "documented"])
def test_the_helm_chart_is_accepted_by_the_real_api_server(
    cluster: Cluster, namespace: str, values: dict[str, Any] | None, tmp_path: Path
):
    rendered = render_chart(cluster, namespace, values, tmp_path)
    lint = ["lint", "--strict", str(CHART), "--namespace", namespace]
    assert "0 chart(s) failed" in cluster.helm(*lint, *(["-f", str(tmp_path / "values.yaml")] if values else []))
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert "Deployment" in kinds and "ClusterRole" in kinds and "ConfigMap" in kinds
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert out.count("(server dry run)") == len(kinds), out


def test_a_field_the_api_server_does_not_know_fails_the_dry_run(cluster: Cluster, namespace: str, tmp_path: Path):
    """The check above has teeth: the chart's Deployment with one misspelt field is refused."""
    documents = [d for d in yaml.safe_load_all(render_chart(cluster, namespace, None, tmp_path)) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    done = subprocess.run(
        [str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "apply", "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump(deployment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in done.stderr, done.stderr


def test_the_charts_rbac_gives_the_virtual_kubelet_what_it_needs(cluster: Cluster, namespace: str, tmp_path: Path):
    rendered = render_chart(cluster, namespace, None, tmp_path)
    name = yaml.safe_load((CHART / "values.yaml").read_text())["nodeName"]
    cluster.kubectl("apply", "-f", "-", stdin=rendered)
    try:
        vk = f"system:serviceaccount:{namespace}:{name}"

        def can(verb: str, resource: str, subresource: str = "") -> str:
            argv = ["auth", "can-i", verb, resource, "--as", vk, "-n", namespace]
            if subresource:
                argv.append(f"--subresource={subresource}")
            return cluster.kubectl(*argv, check=False).strip()

        for verb, resource, subresource in [
            ("create", "nodes", ""),
            ("patch", "nodes", "status"),
            ("update", "pods", "status"),
            ("get", "secrets", ""),
            ("get", "configmaps", ""),
            ("create", "serviceaccounts", "token"),
            ("create", "leases.coordination.k8s.io", ""),
            ("create", "certificatesigningrequests.certificates.k8s.io", ""),
            ("create", "events", ""),
        ]:
            assert can(verb, resource, subresource) == "yes", f"{vk} cannot {verb} {resource} {subresource}"
        assert can("create", "pods") == "no"  # the VK never makes pods
        assert can("update", "secrets") == "no"
        deployment = cluster.get("deployment", f"{name}-node", "-n", namespace)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", stdin=rendered, check=False)
