"""Rendering job scripts for every runtime: structure, quoting, and `bash -n`."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from interlink_provider.pods.jobspec import ContainerSpec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import RuntimeConfig
from interlink_provider.runtimes.base import image_reference, kubernetes_argv
from sidecars.core.kits.script import CORE_TEMPLATES, RenderOptions
from tests import podkit
from tests.podkit import pod

# The site of these tests honours pre-exec and runtime options (both off by default):
# full_pod() carries both.
OPEN = {"allow_pre_exec": True, "allow_runtime_options": True}


def render(p, root, **kwargs):
    kwargs.setdefault("options", RenderOptions(**OPEN))
    return podkit.render(p, root, **kwargs)


# Newlines are covered by the runner tests; here each rendered command stays on one line.
EVIL = "$(touch /tmp/ilp-pwned) `touch /tmp/ilp-pwned` '; touch /tmp/ilp-pwned; ' \" \\ ${HOME} *"


def bash_syntax_ok(script: str) -> None:
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def full_pod(**kwargs):
    return pod(
        [
            {
                "name": "app",
                "image": "busybox",
                "command": ["sh", "-c", EVIL],
                "args": [EVIL],
                "env": [{"name": "EVIL", "value": EVIL}],
                "workingDir": "/work",
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/one", "subPath": "x/y"},
                ],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                "readinessProbe": {
                    "httpGet": {"path": "/r", "port": 8080, "httpHeaders": [{"name": "X", "value": EVIL}]}
                },
                "livenessProbe": {"exec": {"command": ["cat", EVIL]}},
                "startupProbe": {"tcpSocket": {"port": 8080}},
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", EVIL]}},
                    "preStop": {"sleep": {"seconds": 1}},
                },
            },
            {"name": "side", "image": "busybox", "args": ["echo", "only args"]},
        ],
        init=[{"name": "init", "image": "docker://busybox", "command": ["true"]}],
        volumes=[{"name": "data", "emptyDir": {}}],
        annotations={
            "slurm-job.vk.io/flags": "--comment='a b' -t 5 --job-name=ignored",
            "slurm-job.vk.io/singularity-options": "--fakeroot",
            "slurm-job.vk.io/singularity-mounts": "--bind /cvmfs:/cvmfs",
            "slurm-job.vk.io/pre-exec": "echo site-approved pre-exec",
        },
        **kwargs,
    )


@pytest.mark.parametrize("runtime", ["apptainer", "singularity", "enroot", "sandbox"])
def test_every_runtime_renders_a_valid_script(runtime, tmp_path):
    _, paths, script = render(full_pod(), str(tmp_path), runtime=runtime, runtime_config=RuntimeConfig(default=runtime))
    bash_syntax_ok(script)
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --gres=gpu:1" in script
    assert '#SBATCH "--comment=a b"' in script and "#SBATCH --time=5" in script
    assert "ignored" not in script and f"#SBATCH --output={paths.output}" in script
    assert "echo site-approved pre-exec" in script


def test_pod_values_only_appear_quoted(tmp_path):
    _, _, script = render(
        full_pod(), str(tmp_path), runtime="apptainer", runtime_config=RuntimeConfig(default="apptainer")
    )
    # Every line that carries the payload must be a quoted shell word.
    quoted = shlex.quote(EVIL)
    assert quoted in script
    for line in script.splitlines():
        if "ilp-pwned" in line and not line.lstrip().startswith("#"):
            assert "'" in line, line


def test_apptainer_exec_run_env_and_gpu_flags(tmp_path):
    _, paths, script = render(
        full_pod(), str(tmp_path), runtime="apptainer", runtime_config=RuntimeConfig(default="apptainer")
    )
    app_run = next(line for line in script.splitlines() if "apptainer exec" in line and "--nv" in line)
    assert "APPTAINERENV_EVIL=" in app_run and "--containall" in app_run and "--fakeroot" in app_run
    assert "--bind /cvmfs:/cvmfs" in app_run and "--bind --bind" not in app_run
    assert f"--bind {paths.volume_dir('data')}:/data:rw" in app_run
    assert f"--bind {paths.volume_dir('data')}/x/y:/one:rw" in app_run
    assert "--pwd /work" in app_run and "docker://busybox" in app_run
    side_run = next(line for line in script.splitlines() if "apptainer run" in line)
    assert "--nv" not in side_run and "'only args'" in side_run
    init_run = next(line for line in script.splitlines() if "exec" in line and "docker://busybox true" in line)
    assert "docker://docker://" not in init_run


def test_amd_gpus_use_rocm(tmp_path):
    p = pod([{"name": "a", "image": "x", "command": ["true"], "resources": {"limits": {"amd.com/gpu": 1}}}])
    _, _, script = render(p, str(tmp_path), runtime="apptainer", runtime_config=RuntimeConfig(default="apptainer"))
    assert "--rocm" in script and "--nv" not in script


def test_enroot_imports_once_then_starts(tmp_path):
    _, _paths, script = render(
        full_pod(), str(tmp_path), runtime="enroot", runtime_config=RuntimeConfig(default="enroot")
    )
    assert "enroot import --output" in script and "enroot create --force --name" in script
    assert "enroot start --rw" in script and "--env 'EVIL=" in script


def test_image_reference_rules():
    assert image_reference("busybox", "docker://", None) == "docker://busybox"
    assert image_reference("busybox", "docker://", "oras://") == "oras://busybox"
    assert image_reference("/cvmfs/img.sif", "docker://", None) == "/cvmfs/img.sif"
    assert image_reference("shub://x", "docker://", None) == "shub://x"


def test_kubernetes_command_and_args_rules():
    def c(command=(), args=()):
        return ContainerSpec(name="c", image="i", command=tuple(command), args=tuple(args), env=())

    assert kubernetes_argv(c(["cmd"], ["a"]), ["entry"], ["default"]) == ["cmd", "a"]
    assert kubernetes_argv(c([], ["a"]), ["entry"], ["default"]) == ["entry", "a"]
    assert kubernetes_argv(c(), ["entry"], ["default"]) == ["entry", "default"]


def test_sandbox_needs_a_default_command_for_unknown_images(tmp_path):
    p = pod([{"name": "a", "image": "unknown/image:1"}])
    with pytest.raises(PodRejected) as info:
        render(p, str(tmp_path))
    assert "no known default command" in info.value.reason


def test_host_runtime_refuses_volume_mounts(tmp_path):
    p = pod(
        [{"name": "a", "image": "x", "command": ["true"], "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
        volumes=[{"name": "v", "emptyDir": {}}],
    )
    with pytest.raises(PodRejected) as info:
        render(p, str(tmp_path), runtime="host", runtime_config=RuntimeConfig(default="host"))
    assert "host runtime" in info.value.reason


def test_site_can_forbid_pre_exec_and_runtime_options(tmp_path):
    with pytest.raises(PodRejected):
        render(full_pod(), str(tmp_path), options=RenderOptions(allow_pre_exec=False))
    p = pod(
        [{"name": "a", "image": "x", "command": ["true"]}],
        annotations={"slurm-job.vk.io/apptainer-options": "--bind /scratch:/host"},
    )
    apptainer = {"runtime": "apptainer", "runtime_config": RuntimeConfig(default="apptainer")}
    _, _, allowed = render(p, str(tmp_path), **apptainer)
    assert "--bind /scratch:/host" in allowed
    # Forbidden options refuse the pod, naming the site's setting (they were silently dropped).
    with pytest.raises(PodRejected) as refused:
        render(p, str(tmp_path), options=RenderOptions(allow_runtime_options=False), **apptainer)
    assert "render.allow_runtime_options" in refused.value.reason
    assert refused.value.field == "metadata.annotations[slurm-job.vk.io/apptainer-options]"


def test_pre_exec_and_runtime_options_are_refused_by_default(tmp_path):
    """A site that says nothing honours neither: the pod is refused, naming the setting."""
    apptainer = {"runtime": "apptainer", "runtime_config": RuntimeConfig(default="apptainer")}
    container = [{"name": "a", "image": "x", "command": ["true"]}]
    for annotation, setting in [
        ("slurm-job.vk.io/pre-exec", "render.allow_pre_exec"),
        ("slurm-job.vk.io/apptainer-options", "render.allow_runtime_options"),
        ("slurm-job.vk.io/singularity-mounts", "render.allow_runtime_options"),
    ]:
        with pytest.raises(PodRejected) as refused:
            podkit.render(pod(container, annotations={annotation: "--x"}), str(tmp_path), **apptainer)
        assert setting in refused.value.reason and refused.value.field == f"metadata.annotations[{annotation}]"
    # another runtime's options are not this runtime's: ignored, as before
    podkit.render(pod(container, annotations={"slurm-job.vk.io/enroot-options": "--x"}), str(tmp_path), **apptainer)


def test_site_templates_override_ours(tmp_path):
    site = tmp_path / "templates"
    site.mkdir()
    (site / "job.sbatch.j2").write_text(
        "#!/bin/bash\n# site template for {{ pod_name }}\n{% include 'pod-runner.sh.j2' %}"
    )
    _, _, script = render(full_pod(), str(tmp_path), options=RenderOptions(template_dir=str(site), **OPEN))
    assert script.startswith("#!/bin/bash\n# site template for p\n")
    bash_syntax_ok(script)


LIBRARY = (CORE_TEMPLATES / "runner" / "lib.sh").read_text()


def test_the_runner_library_is_included_verbatim(tmp_path):
    _, _, script = render(full_pod(), str(tmp_path))
    assert LIBRARY in script
    bash_syntax_ok(script)


def test_a_site_template_can_replace_one_runner_partial(tmp_path):
    site = tmp_path / "templates"
    (site / "runner").mkdir(parents=True)
    (site / "runner" / "main.sh.j2").write_text(
        '# site entry for {{ pod_name }}\nilp_pre_exec() { module load apptainer; }\nilp_entry "$@"\n'
    )
    _, _, script = render(full_pod(), str(tmp_path), options=RenderOptions(template_dir=str(site), **OPEN))
    assert "# site entry for p\nilp_pre_exec() { module load apptainer; }\n" in script
    assert "echo site-approved pre-exec" not in script  # our main.sh.j2 is replaced
    assert LIBRARY in script  # the other parts are still ours
    assert "ilp_run_0() {" in script and "ilp_probes_1() {" in script
    bash_syntax_ok(script)


def test_a_site_runner_library_is_static_text_too(tmp_path):
    site = tmp_path / "templates"
    (site / "runner").mkdir(parents=True)
    library = LIBRARY + 'ilp_site() { echo "{{ not a template }} {% neither %} {## nor this ##}"; }\n'
    (site / "runner" / "lib.sh").write_text(library)
    _, _, script = render(full_pod(), str(tmp_path), options=RenderOptions(template_dir=str(site), **OPEN))
    assert library in script
    bash_syntax_ok(script)
