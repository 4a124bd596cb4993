"""The Virtual Kubelet emulation behind `pod run` and the vk-test-set replay."""

from __future__ import annotations

import base64

import pytest

from interlink_provider.pods import annotations as an
from interlink_provider.pods import manifest
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.wire import RetrievedPodData

TEXT = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {mode: fast, script.py: "print(1)\\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {token: abc}
---
apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {team: "x"}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: [sh]
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: cm, key: mode}}}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: token}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
    envFrom: [{secretRef: {name: s}, prefix: S_}]
    volumeMounts:
    - {name: code, mountPath: /code}
    - {name: info, mountPath: /info}
  volumes:
  - {name: code, configMap: {name: cm}}
  - name: info
    downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
"""


def test_request_is_what_the_interlink_api_would_send():
    m = manifest.load(TEXT, "team-ns")
    assert len(m.pods) == 1 and len(m.jobs) == 1 and m.jobs[0].backoff_limit == 2
    assert m.secrets[("team-ns", "s")]["data"]["token"] == base64.b64encode(b"abc").decode()
    req = manifest.create_request(m.pods[0], m, namespace="team-ns")
    pod = req["pod"]
    assert pod["metadata"]["uid"] and pod["metadata"]["namespace"] == "team-ns"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {"MODE": "fast", "TOKEN": "abc", "NS": "team-ns", "TEAM": "x", "S_token": "abc"}
    [container] = req["container"]
    assert [cm["metadata"]["name"] for cm in container["configMaps"]] == ["cm"]
    maps = {cm["metadata"]["name"]: cm["data"] for cm in container["projectedvolumemaps"]}
    info = maps.pop("info")
    assert info == {"name": "p"}
    [sa] = maps.values()
    assert sa["ca.crt"].startswith("-----BEGIN CERTIFICATE-----\n") and sa["namespace"] == "team-ns"
    # And the sidecar's translator accepts it.
    spec = pod_to_jobspec(RetrievedPodData.model_validate(req), TranslationPolicy())
    assert {v.name for v in spec.volumes} >= {"code", "info"}


def test_job_pods_get_generated_names():
    m = manifest.load(TEXT)
    first, second = m.jobs[0].make_pod(), m.jobs[0].make_pod()
    assert first["metadata"]["name"].startswith("j-") and first["metadata"]["name"] != second["metadata"]["name"]
    assert first["metadata"]["labels"]["job-name"] == "j"


INDEXED = """
kind: Job
metadata: {name: train}
spec:
  completions: 3
  completionMode: Indexed
  template:
    metadata: {annotations: {interlink.provider/gang: train, interlink.provider/gang-size: "3"}}
    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}
"""


def test_an_indexed_job_makes_one_pod_per_completion_index_as_the_job_controller_does():
    [job] = manifest.load(INDEXED).jobs
    assert job.indexes() == [0, 1, 2]
    pod = job.make_pod(1)
    assert pod["metadata"]["name"].startswith("train-1-")
    assert pod["metadata"]["labels"] == {"job-name": "train", an.COMPLETION_INDEX: "1"}
    assert pod["metadata"]["annotations"][an.COMPLETION_INDEX] == "1"
    assert pod["metadata"]["annotations"]["interlink.provider/gang"] == "train"
    assert job.template["metadata"]["annotations"].get(an.COMPLETION_INDEX) is None  # the template is kept
    [plain] = manifest.load(INDEXED.replace("completionMode: Indexed", "completionMode: NonIndexed")).jobs
    assert plain.indexes() == [None, None, None] and an.COMPLETION_INDEX not in plain.make_pod()["metadata"]["labels"]


@pytest.mark.parametrize(
    "text,error",
    [
        (INDEXED.replace("Indexed", "Sometimes"), "completionMode 'Sometimes'"),
        (INDEXED.replace("completions: 3", "completions: 0"), "completions 0"),
        (INDEXED.replace("completions: 3", "completions: many"), "completions 'many'"),
        ("kind: Deployment\nmetadata: {name: d}", "unsupported kind"),
        ("[1, 2]", "Kubernetes object"),
        ("a: [", "invalid YAML"),
    ],
)
def test_bad_manifests(text, error):
    with pytest.raises(manifest.ManifestError) as info:
        manifest.load(text)
    assert error in str(info.value)


def test_missing_references_are_errors_unless_optional():
    m = manifest.load(
        "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: x\n"
        "    env: [{name: A, valueFrom: {secretKeyRef: {name: gone, key: k}}}]\n"
    )
    with pytest.raises(manifest.ManifestError):
        manifest.create_request(m.pods[0], m)
