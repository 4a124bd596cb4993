"""The HTCondor backend's rendering: job.sh and job.sub, checked with HTCondor's own parser."""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
import subprocess

import classad2
import htcondor2
import pytest

from interlink_provider.pods.policy import Flavor, TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.runtimes import make_runtime
from sidecars.core.kits import workdir
from sidecars.core.kits.backend import Submission
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.script import RenderOptions
from sidecars.htcondor import submitlang
from sidecars.htcondor.backend import HTCondorBackend, HTCondorConfig, _submit_value
from tests.podkit import SANDBOX, pod

# Written as values, exactly (condor_submit parses +Attr strings in old ClassAd syntax).
HOSTILE = [
    'say "hi"',
    'ends with a quote"',
    'back\\slash \\" tricky',
    "x = 1",
    "queue 5",
    "# not a comment",
    "a, b; c | d 'e' \"f\" (g) [h] {i}",
    "ünïcödé ✓",
]
# Refused: a line break or control character, a $ (macro expansion), a trailing backslash.
REFUSED = [
    "a\nqueue 5",
    "a\rexecutable = /bin/sh",
    "a\x00b",
    "tab\there",
    "x\u2028y",
    "$(touch /tmp/ilp-pwned)",
    "$ENV(HOME)",
    "$$(Memory)",
    "a $ b",
    "trailing\\",
]


def make_spec(pod_json, policy=None):
    data = RetrievedPodData.model_validate({"pod": copy.deepcopy(pod_json), "container": []})
    return pod_to_jobspec(data, policy or TranslationPolicy())


def prepare(spec, pods_root="/scratch/pods", config=None, policy=None, options=None) -> tuple[PodPaths, Submission]:
    paths = PodPaths.for_pod(pods_root, spec.namespace, spec.uid)
    backend = HTCondorBackend(config or HTCondorConfig(), policy or TranslationPolicy())
    runtime = make_runtime("sandbox", SANDBOX)
    return paths, backend.prepare(spec, paths, runtime, options or RenderOptions(), f"ilp-{spec.uid}")


def simple_pod(**spec):
    return pod(
        [
            {
                "name": "app",
                "image": "busybox",
                "command": ["sh", "-c", "echo hi"],
                "resources": {"limits": {"cpu": "3", "memory": "2Gi"}},
            }
        ],
        **spec,
    )


def parsed(submission: Submission) -> htcondor2.Submit:
    return htcondor2.Submit(submission.files["job.sub"])


def classad_value(sub: htcondor2.Submit, key: str):
    """The value HTCondor stores for `+key`: macros expanded, then parsed as condor_submit
    does (old ClassAd syntax)."""
    return classad2.parseOne(f"{key} = {sub.expand(f'MY.{key}')}\n", classad2.ParserType.Old)[key]


def bash_syntax_ok(script: str) -> None:
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_description_parses_and_carries_the_pod():
    spec = make_spec(simple_pod())
    paths, sub_ = prepare(spec)
    assert set(sub_.files) == {"job.sub"}
    sub = parsed(sub_)
    assert sub["universe"] == "vanilla"
    assert sub["executable"] == paths.script == f"{paths.pod_dir}/job.sh"
    assert sub["initialdir"] == paths.pod_dir
    assert sub["output"] == sub["error"] == paths.output
    assert sub["log"] == f"{paths.pod_dir}/job.log"
    assert sub["request_cpus"] == "3" and sub["request_memory"] == "2048"
    assert "request_gpus" not in sub
    assert sub["batch_name"] == f"ilp-{spec.uid}"
    assert classad_value(sub, "InterLinkJobName") == f"ilp-{spec.uid}"
    assert classad_value(sub, "InterLinkPod") == "ns/p"
    assert classad_value(sub, "InterLinkUID") == spec.uid
    assert sub["kill_sig"] == "SIGUSR1" and sub["want_graceful_removal"] == "true"
    assert sub["job_max_vacate_time"] == str(spec.grace_seconds + 5)
    assert sub["environment"] == '"ILP_JOB_ID=$(Cluster).$(Process)"'  # the runner's job_started
    assert sub["should_transfer_files"] == "NO" and sub["transfer_executable"] == "false"
    assert "MY.NumJobStarts == 0" in sub["requirements"]
    assert "JobCurrentStartDate" not in sub["periodic_remove"]  # no deadline
    assert "EnteredCurrentStatus > 600" in sub["periodic_remove"]
    assert sub.getQArgs() == ""


def test_gpus_deadline_and_hold_timeout():
    spec = make_spec(
        pod(
            [{"name": "app", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 2}}}],
            activeDeadlineSeconds=300,
            terminationGracePeriodSeconds=20,
        )
    )
    _, submission = prepare(spec, config=HTCondorConfig(hold_timeout_seconds=90.5))
    sub = parsed(submission)
    assert sub["request_gpus"] == "2"
    assert "time() - JobCurrentStartDate > 380" in sub["periodic_remove"]  # deadline + grace + 60
    assert "EnteredCurrentStatus > 91" in sub["periodic_remove"]
    assert sub["job_max_vacate_time"] == "25"
    # The job stops itself at the deadline (USR2 -> DeadlineExceeded), like Slurm's --signal.
    assert "sleep 300" in submission.script and 'kill -USR2 "$ilp_job_pid"' in submission.script


def test_job_script_is_the_shared_runner_with_the_site_prologue():
    spec = make_spec(simple_pod())
    paths, submission = prepare(spec, config=HTCondorConfig(prologue=["module load apptainer"]))
    script = submission.script
    bash_syntax_ok(script)
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH" not in script
    assert "module load apptainer" in script
    assert script.index("module load apptainer") < script.index("ILP_POD_DIR=")
    assert f"ILP_POD_DIR={paths.pod_dir}" in script
    assert "ILP_DEADLINE_TIMER" not in script and "ILP_STAGED=1" not in script


def test_without_a_shared_filesystem_the_pod_directory_travels():
    spec = make_spec(
        pod(
            [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            volumes=[{"name": "d", "emptyDir": {}}],
        )
    )
    paths, submission = prepare(spec, config=HTCondorConfig(shared_filesystem=False))
    sub = parsed(submission)
    assert sub["should_transfer_files"] == "YES"
    assert sub["when_to_transfer_output"] == "ON_EXIT_OR_EVICT"
    assert sub["transfer_input_files"] == f"{paths.pod_dir}/volumes"
    assert sub["transfer_output_files"] == "containers"
    assert "transfer_executable" not in sub
    bash_syntax_ok(submission.script)
    assert "ILP_STAGED=1" in submission.script
    # A pod without volumes has no volumes/ directory to transfer.
    _, bare = prepare(make_spec(simple_pod()), config=HTCondorConfig(shared_filesystem=False))
    assert "transfer_input_files" not in parsed(bare)


def test_site_commands_flavors_and_requirements():
    policy = TranslationPolicy(
        flavors={
            "default": Flavor(
                scheduler_flags=["+WantGPULab = true", "requirements = (CUDACapability >= 7)", 'MY.Project = "p"']
            )
        }
    )
    config = HTCondorConfig(
        extra_submit={"+AccountingGroup": '"group_physics.svc"', "request_disk": "4GB", "+WantGPULab": "false"},
        requirements="HasSingularity =?= true",
    )
    spec = make_spec(simple_pod(), policy)
    _, submission = prepare(spec, config=config, policy=policy)
    sub = parsed(submission)
    assert sub["MY.AccountingGroup"] == '"group_physics.svc"'
    assert sub["request_disk"] == "4GB"
    assert sub["MY.WantGPULab"] == "true"  # the flavor's command replaces the site's
    assert sub["MY.Project"] == '"p"'
    assert sub["requirements"] == (
        "(HasSingularity =?= true) && ((CUDACapability >= 7)) && "
        "(MY.NumJobStarts =?= undefined || MY.NumJobStarts == 0)"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"executable": "/bin/evil"},
        {"Output": "/tmp/x"},
        {"+InterLinkJobName": '"x"'},
        {"requirements": "true"},
        {"queue": "5"},
        {"+A": "1\nqueue 5"},
        {"+A": "x \\"},
        {"bad key": "1"},
        {"+A": ""},
    ],
)
def test_extra_submit_cannot_take_over(extra):
    with pytest.raises(ValueError):
        HTCondorConfig(extra_submit=extra)


@pytest.mark.parametrize("flag", ["--partition=gpu", "executable = /bin/sh", "+A = 1\nqueue", "kill_sig = SIGKILL"])
def test_flavor_commands_are_checked(flag):
    policy = TranslationPolicy(flavors={"default": Flavor(scheduler_flags=[flag])})
    with pytest.raises(PodRejected) as info:
        prepare(make_spec(simple_pod(), policy), policy=policy)
    assert info.value.field == "flavor default"


def test_slurm_flags_annotation_is_ignored_with_a_warning():
    spec = make_spec(simple_pod(annotations={"slurm-job.vk.io/flags": "--time=5"}))
    _, submission = prepare(spec)
    assert any("slurm-job.vk.io/flags is ignored" in w for w in submission.warnings)
    assert "--time" not in submission.files["job.sub"]


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_pod_strings_stay_values(evil):
    spec = dataclasses.replace(make_spec(simple_pod()), name=evil)
    _paths, submission = prepare(spec)
    sub = parsed(submission)
    assert classad_value(sub, "InterLinkPod") == f"ns/{evil}"
    # Nothing else moved: same commands, same values, one job.
    _, reference = prepare(dataclasses.replace(spec, name="p"))
    ref = parsed(reference)
    assert set(sub.keys()) == set(ref.keys())
    assert {k: v for k, v in sub.items() if k != "MY.InterLinkPod"} == {
        k: v for k, v in ref.items() if k != "MY.InterLinkPod"
    }
    assert sub.getQArgs() == ""
    assert [line for line in submission.files["job.sub"].splitlines() if line.strip().lower().startswith("queue")] == [
        "queue"
    ]
    bash_syntax_ok(submission.script)


@pytest.mark.parametrize("evil", REFUSED)
def test_strings_that_cannot_be_written_are_refused(evil):
    spec = dataclasses.replace(make_spec(simple_pod()), name=evil)
    with pytest.raises(PodRejected) as info:
        prepare(spec)
    assert info.value.field == "metadata.name"


def test_awkward_pods_root_round_trips(tmp_path):
    root = str(tmp_path / "pods 'a' \"b\" #1 = x\\y")
    spec = make_spec(simple_pod())
    paths, submission = prepare(spec, pods_root=root)
    sub = parsed(submission)
    for key, want in (("executable", paths.script), ("initialdir", paths.pod_dir), ("output", paths.output)):
        assert sub.expand(key) == want


@pytest.mark.parametrize("root", ["/scratch/$(x)/pods", "/scratch/pods\nqueue", "/scratch/$ENV(HOME)"])
def test_pods_roots_that_cannot_be_written_are_refused(root):
    with pytest.raises(PodRejected):
        prepare(make_spec(simple_pod()), pods_root=root)


def test_the_template_only_writes_quoted_values():
    assert _submit_value(submitlang.SubmitText("x")) == "x"
    assert _submit_value(12) == "12"
    for bad in ("plain str", True, 1.5, None):
        with pytest.raises(TypeError):
            _submit_value(bad)


def test_a_site_template_that_changes_a_value_is_caught(tmp_path):
    (tmp_path / "job.sub.j2").write_text(
        'executable = /bin/sh\n{% for k, v in cmd.items() if k != "executable" %}{{ k }} = {{ v }}\n{% endfor %}queue\n'
    )
    with pytest.raises(PodRejected, match="did not come out as meant"):
        prepare(make_spec(simple_pod()), options=RenderOptions(template_dir=str(tmp_path)))


def test_a_site_template_with_all_commands_is_accepted(tmp_path):
    (tmp_path / "job.sub.j2").write_text("{% for k, v in cmd.items() %}{{ k }} = {{ v }}\n{% endfor %}queue\n")
    _, submission = prepare(make_spec(simple_pod()), options=RenderOptions(template_dir=str(tmp_path)))
    assert parsed(submission)["kill_sig"] == "SIGUSR1"


def test_submit_file_is_written_beside_the_script(tmp_path):
    spec = make_spec(simple_pod())
    paths, submission = prepare(spec, pods_root=str(tmp_path / "pods"))
    workdir.materialize(paths, spec, submission.script, files=submission.files)
    written = os.path.join(paths.pod_dir, "job.sub")
    with open(written) as handle:
        assert handle.read() == submission.files["job.sub"]
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.script).st_mode) == 0o700
    assert not [n for n in os.listdir(paths.pod_dir) if n.endswith(".tmp")]


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "job.sh", "volumes", "x\x00"])
def test_extra_file_names_are_plain(name, tmp_path):
    with pytest.raises(workdir.WorkdirError):
        Submission(script="#!/bin/bash\n", files={name: "x"})
    spec = make_spec(simple_pod())
    paths = PodPaths.for_pod(str(tmp_path / "pods"), spec.namespace, spec.uid)
    with pytest.raises(workdir.WorkdirError):
        workdir.materialize(paths, spec, "#!/bin/bash\n", files={name: "x"})
