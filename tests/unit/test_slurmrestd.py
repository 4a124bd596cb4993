"""The slurmrestd transport's pure parts: #SBATCH lines back to job properties, units, capacity."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlink_provider.pods.annotations import FLAGS
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.runtimes import make_runtime
from sidecars.core.kits.backend import SubmitError
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.slurm.backend import SlurmConfig
from sidecars.slurm.flags import Flag, sbatch_word
from sidecars.slurm.restd import (
    SlurmRestBackend,
    SlurmRestdConfig,
    job_properties,
    megabytes,
    minutes,
    node_capacity,
    script_directives,
)
from tests.podkit import SANDBOX, pod


@pytest.mark.parametrize(
    "value, expected",
    [
        ("10", 10),
        ("1:30", 2),
        ("2:00:00", 120),
        ("1-0", 1440),
        ("1-2:03", 1563),
        ("0-0:0:59", 1),
    ],
)
def test_slurm_time_formats_become_minutes(value, expected):
    assert minutes(value) == expected


@pytest.mark.parametrize("value, expected", [("512", 512), ("512M", 512), ("2G", 2048), ("1T", 1048576), ("100K", 1)])
def test_memory_sizes_become_megabytes(value, expected):
    assert megabytes(value) == expected


def test_the_directives_of_a_rendered_script_become_job_properties():
    script = "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH " + sbatch_word('--comment=say "hi" \\ there'),
            "#SBATCH --time=90",
            "#SBATCH --mem=2G",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --no-requeue",
            "#SBATCH --signal=B:USR2@40",
            "#SBATCH --export=NONE",
            "#SBATCH --nodes=1-2",
            "# a comment",
            "echo start",
            "#SBATCH --partition=never-read",
        ]
    )
    job = job_properties(script_directives(script), {"PATH": "/bin"})
    assert job == {
        "environment": {"PATH": "/bin"},
        "comment": 'say "hi" \\ there',
        "time_limit": 90,
        "memory_per_node": 2048,
        "gres": "gpu:1",
        "requeue": False,
        "nodes": [1, 2],
    }


def test_an_option_without_a_rest_equivalent_is_rejected_by_name():
    with pytest.raises(PodRejected, match="--tmp cannot be passed through slurmrestd"):
        job_properties([Flag("--tmp", "100")], {})


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=40))
def test_any_comment_survives_the_round_trip(comment):
    script = "#!/bin/bash\n#SBATCH " + sbatch_word("--comment=" + comment) + "\ntrue\n"
    assert job_properties(script_directives(script), {}).get("comment", "") == comment


def test_capacity_counts_free_resources_of_usable_nodes():
    nodes = [
        {
            "state": "mixed",
            "cpus": 8,
            "alloc_cpus": 3,
            "real_memory": 8000,
            "alloc_memory": 1000,
            "gres": "gpu:2",
            "gres_used": "gpu:1(IDX:0)",
        },
        {"state": "down", "cpus": 64, "alloc_cpus": 0, "real_memory": 1, "alloc_memory": 0},
    ]
    capacity = node_capacity(nodes)
    assert (capacity.cpus, capacity.memory_mib, capacity.gpus, capacity.gpus_total, capacity.nodes) == (
        5,
        7000,
        1,
        2,
        1,
    )


def test_exactly_one_credential_is_required():
    with pytest.raises(ValueError, match="exactly one of jwt_key_file or token_file"):
        SlurmRestdConfig()
    with pytest.raises(ValueError):
        SlurmRestdConfig(jwt_key_file="k", token_file="t")


class ScriptFiles:
    """The site-files seam, holding one script (the only thing slurmrestd's submit reads)."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.read: list[str] = []

    def for_account(self, account):
        return self

    async def read_from(self, path, offset, identity):
        self.read.append(path)
        return self.script.encode()[offset:], offset, None


def restd_backend(files=None) -> SlurmRestBackend:
    restd = SlurmRestdConfig(token_file="/nonexistent/token", job_environment={"PATH": "/bin"})
    return SlurmRestBackend(SlurmConfig(), TranslationPolicy(), restd, files or ScriptFiles(""))


def prepared(backend: SlurmRestBackend, flags: str):
    data = RetrievedPodData.model_validate(
        {"pod": pod([{"name": "c", "image": "busybox", "command": ["true"]}], annotations={FLAGS: flags})}
    )
    spec = pod_to_jobspec(data, TranslationPolicy())
    paths = PodPaths.for_pod("/pods", spec.namespace, spec.uid)
    runtime = make_runtime("sandbox", SANDBOX)
    return paths, backend.prepare(spec, paths, runtime, RenderOptions(), "ilp-" + spec.uid)


def test_an_unmappable_option_refuses_the_pod_when_it_is_created():
    with pytest.raises(PodRejected, match="--tmp cannot be passed through slurmrestd") as info:
        prepared(restd_backend(), "--tmp=100")
    assert info.value.field == "batch script"


async def test_the_job_properties_are_decided_at_prepare_and_sent_with_the_script():
    paths, submission = prepared(restd_backend(), "--comment=from-rest --time=7")
    job = submission.options["job"]
    assert job["comment"] == "from-rest" and job["time_limit"] == 7 and job["name"].startswith("ilp-")
    assert "environment" not in job  # the site's, added when the job is submitted
    json.dumps(submission.options)  # kept with the pod as JSON
    files = ScriptFiles(submission.script)
    backend = restd_backend(files)
    sent = {}

    async def slurm(method, endpoint, command, *, user=None, body=None, **kwargs):
        sent.update(method=method, endpoint=endpoint, user=user, body=body)
        return 200, {"job_id": 77}

    backend.client.slurm = slurm
    options = {"job": {**job, "comment": "as prepared"}}  # what was kept, not the script's lines
    assert await backend.submit(paths, "ilp-x", "alice", options) == "77"
    assert files.read == [paths.script] and sent["body"]["script"] == submission.script
    assert sent["body"]["job"] == {**options["job"], "environment": {"PATH": "/bin"}}
    assert (sent["endpoint"], sent["user"]) == ("job/submit", "alice")
    # A pod accepted before its options were kept: its script's lines, still checked.
    backend = restd_backend(ScriptFiles("#!/bin/bash\n#SBATCH --tmp=100\ntrue\n"))
    backend.client.slurm = slurm
    with pytest.raises(SubmitError, match="--tmp cannot be passed") as refused:
        await backend.submit(paths, "ilp-x", None, None)
    assert refused.value.permanent
