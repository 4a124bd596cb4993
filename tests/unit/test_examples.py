"""Every file in examples/ is what it claims: a daemon config its loader accepts, or a manifest
of Pods/Jobs that translate to jobs; and demo.sh runs exactly the manifests."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

from interlink_provider.gateway.config import load_config as load_gateway
from interlink_provider.pods import manifest
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.wire import RetrievedPodData
from sidecars.daemon.config import load_config as load_site

REPO = Path(__file__).resolve().parents[2]
IDENTITY_ANNOTATION = "interlink.provider/identity-secret"
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml"))


def is_config(path: Path) -> bool:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return len(documents) == 1 and "kind" not in documents[0]


def demo_skips(path: Path) -> bool:
    """The `case` pattern demo.sh uses to leave configs out of its pod runs."""
    line = next(text for text in (REPO / "deploy/local/demo.sh").read_text().splitlines() if "case $example in" in text)
    patterns = re.search(r"case \$example in (.*?)\) continue", line).group(1).split(" | ")
    return any(fnmatch.fnmatch(str(path.relative_to(REPO)), p) for p in patterns)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_an_example_is_a_valid_config_or_manifest(path: Path):
    if is_config(path):
        raw = yaml.safe_load(path.read_text())
        config = load_gateway(path) if "sites" in raw else load_site(path, {})
        assert config is not None
        return
    text = path.read_text()
    for document in yaml.safe_load_all(text):  # the identity Secret `token login` writes beside it
        secret = ((document or {}).get("metadata", {}).get("annotations") or {}).get(IDENTITY_ANNOTATION)
        if secret:
            namespace = document["metadata"].get("namespace", "default")
            text += yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret, "namespace": namespace},
                    "stringData": {"access_token": "stand-in"},
                },
                explicit_start=True,
            )
    loaded = manifest.load(text)
    pods = loaded.pods + [{"metadata": {"name": job.name}, **job.template} for job in loaded.jobs]
    assert pods, f"{path} holds no Pod or Job"
    for pod in pods:
        request = manifest.create_request(pod, loaded, namespace=pod["metadata"].get("namespace", "default"))
        spec = pod_to_jobspec(RetrievedPodData.model_validate(request), TranslationPolicy())
        assert spec.containers


def test_the_demo_runs_the_top_level_manifests_and_skips_the_configs():
    top = [p for p in EXAMPLES if p.parent == REPO / "examples"]
    assert [p.name for p in top if demo_skips(p)] == [p.name for p in top if is_config(p)]
