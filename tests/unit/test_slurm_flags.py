"""sbatch flags: annotation parsing, site allowlist, precedence, #SBATCH quoting."""

from __future__ import annotations

import pytest

from interlink_provider.pods.annotations import FLAGS, pod_options
from interlink_provider.pods.validate import PodRejected
from sidecars.slurm.flags import Flag, FlagPolicy, annotation_flags, merge, parse_flags, sbatch_word


def test_long_short_and_separate_values_parse_to_long_names():
    flags = parse_flags(["--time=10", "-t", "20", "-p", "gpu", "--exclusive", "-N2", "--qos", "high"], "f")
    assert [f.render() for f in flags] == [
        "--time=10",
        "--time=20",
        "--partition=gpu",
        "--exclusive",
        "--nodes=2",
        "--qos=high",
    ]


@pytest.mark.parametrize(
    "words,reason",
    [
        (["--no-such-option=1"], "unknown sbatch option"),
        (["positional"], "not an sbatch option"),
        (["--time"], "needs a value"),
        (["--exclusive=yes"], "takes no value"),
        (["--comment=a\nb"], "control characters"),
    ],
)
def test_malformed_flags_are_refused(words, reason):
    with pytest.raises(PodRejected) as info:
        parse_flags(words, "annotation")
    assert reason in info.value.reason


def flags(text: str):
    """The flags annotation as translation resolves it."""
    return pod_options({FLAGS: text}).scheduler_flags


def test_interlink_ci_annotation_keeps_time_and_drops_job_name():
    kept, warnings = annotation_flags(flags("--job-name=test-pod-cfg -t 2800"), FlagPolicy())
    assert [f.render() for f in kept] == ["--time=2800"]
    assert warnings and "--job-name=test-pod-cfg" in warnings[0]


def test_flags_outside_the_allowlist_fail_the_pod_with_the_allowed_list():
    with pytest.raises(PodRejected) as info:
        annotation_flags(flags("--time=5 --dependency=afterok:1"), FlagPolicy())
    assert "--dependency is not allowed" in info.value.reason and "--time" in info.value.reason
    strict = FlagPolicy(allow=["--time"])
    with pytest.raises(PodRejected):
        annotation_flags(flags("--partition=gpu"), strict)


def test_unbalanced_quotes_are_refused():
    with pytest.raises(PodRejected) as info:
        annotation_flags(flags("--comment='oops"), FlagPolicy())
    assert "cannot parse" in info.value.reason


def test_later_layers_win_and_conflicting_memory_options_replace_each_other():
    merged = merge(
        [Flag("--mem", "1024M"), Flag("--time", "10")],
        [Flag("--mem-per-cpu", "2G")],
        [Flag("--time", "20")],
    )
    assert [f.render() for f in merged] == ["--mem-per-cpu=2G", "--time=20"]
    merged = merge([Flag("--gres", "gpu:1")], [Flag("--gpus", "2")])
    assert [f.render() for f in merged] == ["--gpus=2"]


@pytest.mark.parametrize(
    "word,expected",
    [
        ("--time=10", "--time=10"),
        ("--comment=two words", '"--comment=two words"'),
        ('--comment=say "hi" \\o/', '"--comment=say \\"hi\\" \\\\o/"'),
        ("--comment=it's", '"--comment=it\'s"'),
    ],
)
def test_sbatch_lines_use_sbatch_quoting_not_shell_quoting(word, expected):
    assert sbatch_word(word) == expected


def test_sbatch_words_cannot_carry_newlines():
    with pytest.raises(ValueError):
        sbatch_word("--comment=a\n#SBATCH --uid=0")
