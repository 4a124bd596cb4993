"""The slurmrestd transport's pure parts: #SBATCH lines back to job properties, units, capacity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlink_provider.pods.validate import PodRejected
from sidecars.slurm.flags import Flag, sbatch_word
from sidecars.slurm.restd import (
    SlurmRestdConfig,
    job_properties,
    megabytes,
    minutes,
    node_capacity,
    script_directives,
)


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
