"""Pod annotations are read once, in the pod model, into typed JobSpec fields: the backends and
the script renderer read `JobSpec.pod_options`, and a value that cannot be split refuses the pod
only where it is used, with the same reason and field as before."""

from __future__ import annotations

import pytest

from interlink_provider.pods import annotations as an
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import RuntimeConfig
from sidecars.core.kits.script import RenderOptions
from tests.podkit import pod, render
from tests.unit.test_htcondor_render import make_spec, prepare

CONTAINER = [{"name": "c", "image": "busybox", "command": ["true"]}]


def test_every_annotation_is_resolved_into_pod_options():
    options = an.pod_options(
        {
            an.FLAGS: "--time=5 --comment='a b'",
            an.PRE_EXEC: "module load x",
            an.IMAGE_ROOT: "/cvmfs/images",
            an.RUNTIME: "enroot",
            an.runtime_options("apptainer"): "--fakeroot",
            an.runtime_mounts("apptainer"): "--bind /a:/b",
            an.runtime_options("enroot"): "--rw",
            "unrelated/thing": "x",
        }
    )
    assert options.scheduler_flags.get() == ("--time=5", "--comment=a b") and options.scheduler_flags
    assert (options.pre_exec, options.image_root, options.runtime) == ("module load x", "/cvmfs/images", "enroot")
    assert options.runtime_options("apptainer") == ("--fakeroot",)
    assert options.runtime_mounts("apptainer") == ("--bind", "/a:/b")
    assert options.runtime_options("enroot") == ("--rw",) and options.runtime_mounts("enroot") == ()
    assert options.runtime_options("singularity") == ()
    empty = an.pod_options({})
    assert not empty.scheduler_flags and empty.scheduler_flags.get() == ()
    assert (empty.pre_exec, empty.image_root, empty.runtime) == ("", None, None)


def test_unparsable_flags_refuse_a_slurm_pod_and_are_ignored_on_htcondor(tmp_path):
    unbalanced = pod(CONTAINER, annotations={an.FLAGS: "--comment='oops"})
    with pytest.raises(PodRejected) as info:
        render(unbalanced, str(tmp_path))
    assert info.value.reason.startswith("cannot parse flags:")
    assert info.value.field == "metadata.annotations[slurm-job.vk.io/flags]"
    _, submission = prepare(make_spec(unbalanced))
    assert any("slurm-job.vk.io/flags is ignored" in w for w in submission.warnings)


def test_unparsable_runtime_options_refuse_only_the_runtime_that_reads_them(tmp_path):
    p = pod(CONTAINER, annotations={an.runtime_options("apptainer"): "--bind 'x"})
    apptainer = {
        "runtime": "apptainer",
        "runtime_config": RuntimeConfig(default="apptainer"),
        "options": RenderOptions(allow_runtime_options=True),  # a site that honours them
    }
    with pytest.raises(PodRejected) as info:
        render(p, str(tmp_path), **apptainer)
    assert info.value.reason.startswith("cannot parse:")
    assert info.value.field == "metadata.annotations[slurm-job.vk.io/apptainer-options]"
    render(p, str(tmp_path))  # the sandbox runtime reads no apptainer options
