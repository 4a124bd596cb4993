"""apptainer/singularity and enroot running images from the site's image cache (runtime.<name>.
image_cache, #19): the rendered launch lines in both switch states, and the job script itself run
by bash with `FakeRuntime`, a test double of the `apptainer`/`singularity`/`enroot` executables
(none of them installs on this machine) that records the argv, environment and working
directory it was started with instead of running anything."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interlink_provider.images import pins
from interlink_provider.images.cache import CachedImage
from interlink_provider.images.config import ImageConfig
from interlink_provider.images.reference import parse
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import Bind, LaunchContext, RuntimeConfig, make_runtime
from interlink_provider.runtimes.apptainer import ApptainerConfig, ApptainerRuntime
from interlink_provider.runtimes.charliecloud import CharliecloudRuntime
from interlink_provider.runtimes.enroot import EnrootConfig, EnrootRuntime
from sidecars.core.domain.records import Stage
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits.script import CORE_TEMPLATES, RenderOptions
from tests.doubles import InMemoryBackend, InMemoryFiles
from tests.helpers import wait_for
from tests.podkit import materialize, pod, render
from tests.unit.test_image_pulls import ALICE, ScriptedCache, request

EVIL = "$(touch /tmp/ilp-pwned) `touch /tmp/ilp-pwned` '; x' \"d\" \\ ${HOME} * a  b"
DIGEST = "sha256:" + "cd" * 32
IMAGE = ImageConfig(
    entrypoint=("/bin/echo", "from entrypoint"),
    cmd=("default-arg", EVIL),
    env=("PATH=/bin:/usr/bin", "GREETING=image", f"TRICKY={EVIL}"),
    working_dir="/image dir",
)
CACHED = {
    "apptainer": RuntimeConfig(default="apptainer", apptainer=ApptainerConfig(image_cache=True)),
    "singularity": RuntimeConfig(
        default="singularity", singularity=ApptainerConfig(executable="singularity", image_cache=True)
    ),
    "enroot": RuntimeConfig(default="enroot", enroot=EnrootConfig(image_cache=True)),
}
# The three Kubernetes cases, one container each; each container's CASE variable names its record.
CONTAINERS: list[dict[str, Any]] = [
    {
        "name": "command",
        "image": "busybox",
        "command": ["sh", "-c", EVIL],
        "args": [EVIL],
        "workingDir": "/pod dir",
        "env": [{"name": "CASE", "value": "command"}, {"name": "GREETING", "value": "pod"}],
    },
    {
        "name": "args",
        "image": "busybox",
        "args": ["a b", EVIL],
        "env": [{"name": "CASE", "value": "args"}],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    },
    {"name": "image", "image": "busybox", "env": [{"name": "CASE", "value": "image"}]},
]
EXPECTED_ARGV = {
    "command": ["sh", "-c", EVIL, EVIL],
    "args": ["/bin/echo", "from entrypoint", "a b", EVIL],  # args replace only Cmd
    "image": ["/bin/echo", "from entrypoint", "default-arg", EVIL],
}
EXPECTED_WORKDIR = {"command": "/pod dir", "args": "/image dir", "image": "/image dir"}

FAKE_RUNTIME = """#!{python}
# FakeRuntime: a test double of {name}. It records how it was started in $ILP_FAKE_OUT and exits 0.
import json, os, sys, tempfile
record = {{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}
data = os.environ.get("ENROOT_DATA_PATH")
if data and "--rc" in sys.argv:
    name = sys.argv[sys.argv.index("--") + 1]
    record["root_has_image"] = os.path.isfile(os.path.join(data, name, "etc", "hello"))
    record["rc"] = open(sys.argv[sys.argv.index("--rc") + 1]).read()
fd, path = tempfile.mkstemp(dir=os.environ["ILP_FAKE_OUT"], suffix=".json")
with os.fdopen(fd, "w") as out:
    json.dump(record, out)
"""


def cached_image(cache: Path) -> CachedImage:
    """An image in the cache with a one-file rootfs (what enroot's prepare step copies)."""
    path = cache / "images" / DIGEST.replace(":", "-")
    (path / "rootfs" / "etc").mkdir(parents=True)
    (path / "rootfs" / "etc" / "hello").write_text("from the image\n")
    return CachedImage(parse("busybox"), DIGEST, path, IMAGE, 1, pulled=True)


def install_fakes(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name in ("apptainer", "singularity", "enroot"):
        fake = bin_dir / name
        fake.write_text(FAKE_RUNTIME.format(python=sys.executable, name=name))
        fake.chmod(0o755)


class CachedSite:
    """A pod's job script for a cached-image runtime, its containers pinned as the sidecar pins them
    (images.pins), run by bash with FakeRuntime first on PATH."""

    def __init__(self, tmp_path: Path, runtime: str) -> None:
        self.tmp, self.runtime = tmp_path, runtime
        self.cache, self.out = tmp_path / "cache", tmp_path / "out"
        self.out.mkdir()
        install_fakes(tmp_path / "bin")
        self.image = cached_image(self.cache)

    def materialize(self, containers: list[dict[str, Any]]) -> Any:
        p = pod(containers)
        store = pins.Pins(self.cache)
        for container in containers:
            store.write(p["metadata"]["uid"], container["name"], self.image)
        options = RenderOptions(image_cache=str(self.cache))
        _, paths = materialize(
            p, self.tmp / "pods", runtime=self.runtime, runtime_config=CACHED[self.runtime], options=options
        )
        return paths

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.tmp / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "ILP_FAKE_OUT": str(self.out),
            "SLURM_JOB_ID": "42",  # passed through to the container by the site's rule
        }
        return subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60, env=env)

    def records(self) -> dict[str, dict[str, Any]]:
        """The fake's records by the container's CASE variable (or 'exec' without one)."""
        found = {}
        for path in self.out.glob("*.json"):
            record = json.loads(path.read_text())
            found[self.case_of(record) or "exec"] = record
            path.unlink()
        return found

    def case_of(self, record: dict[str, Any]) -> str:
        if self.runtime == "enroot":
            return dict(_enroot_env(record["argv"])).get("CASE", "")
        return record["env"].get(f"{_prefix(self.runtime)}CASE", "")


def _prefix(runtime: str) -> str:
    return "SINGULARITYENV_" if runtime == "singularity" else "APPTAINERENV_"


def _enroot_env(argv: list[str]) -> list[tuple[str, str]]:
    """The --env words of an `enroot start`, in order, as (name, value)."""
    pairs = []
    for flag, word in itertools.pairwise(argv):
        if flag == "--env":
            name, _, value = word.partition("=")
            pairs.append((name, value))
    return pairs


@pytest.fixture(autouse=True)
def no_pwned():
    yield
    assert not Path("/tmp/ilp-pwned").exists()


# ------------------------------------------------------------------ the job script, run with FakeRuntime


@pytest.mark.parametrize("runtime", ["apptainer", "singularity"])
def test_apptainer_runs_the_pinned_rootfs_by_kubernetes_rule(tmp_path, runtime):
    site = CachedSite(tmp_path, runtime)
    paths = site.materialize(CONTAINERS)
    result = site.run(paths.script)
    assert result.returncode == 0, result.stderr
    records = site.records()
    assert sorted(records) == ["args", "command", "image"]
    rootfs = str(site.image.rootfs)
    prefix = _prefix(runtime)
    for case, record in records.items():
        argv = record["argv"]
        assert argv[0] == "exec"  # an unpacked image has no runscript
        at = argv.index(rootfs)
        assert argv[at + 1 :] == EXPECTED_ARGV[case]
        options = argv[1:at]
        assert options[-2:] == ["--pwd", EXPECTED_WORKDIR[case]]
        assert options[:3] == ["--containall", "--cleanenv", "--no-eval"]
        assert ("--nv" in options) == (case == "args")  # GPU flag only for the container with GPUs
        env = record["env"]
        assert env[f"{prefix}PATH"] == "/bin:/usr/bin" and env[f"{prefix}TRICKY"] == EVIL
        assert env[f"{prefix}GREETING"] == ("pod" if case == "command" else "image")  # the pod's wins
        assert env[f"{prefix}SLURM_JOB_ID"] == "42"
    # kubectl exec, exec probes and hooks: the same image, environment and working directory
    result = site.run(paths.script, "__exec", "0", "cat", EVIL)
    assert result.returncode == 0, result.stderr
    [record] = site.records().values()
    argv = record["argv"]
    assert argv[argv.index(rootfs) + 1 :] == ["cat", EVIL]
    assert argv[argv.index(rootfs) - 2 : argv.index(rootfs)] == ["--pwd", "/pod dir"]
    assert record["env"][f"{prefix}GREETING"] == "pod"


def test_apptainer_options_from_annotations_may_hold_any_word(tmp_path):
    """The job script's lists are counted, not separated: an option `--` shifts nothing."""
    site = CachedSite(tmp_path, "apptainer")
    runtime = make_runtime("apptainer", CACHED["apptainer"])
    ctx = LaunchContext(pod_dir="/p", rootfs="/p/r", binds=(), extra_options=("--", "x"), image_pin="/c/p.sh")
    spec, _, _ = render(
        pod([CONTAINERS[2]]),
        "/pods",
        runtime="apptainer",
        runtime_config=CACHED["apptainer"],
        options=RenderOptions(image_cache="/c"),
    )
    launch = runtime.launch(spec.containers[0], ctx)
    written = pins.Pins(site.cache).write("u", "c", site.image)
    words = [written if word == "/c/p.sh" else word for word in launch.run]
    script = f"source {LIBRARY}; ILP_PASS=(); " + shlex.join(str(word) for word in words)
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "ILP_FAKE_OUT": str(site.out)},
    )
    assert result.returncode == 0, result.stderr
    [record] = site.records().values()
    argv = record["argv"]
    assert argv[1:6] == ["--containall", "--cleanenv", "--no-eval", "--", "x"]
    assert argv[-5:] == [str(site.image.rootfs), *EXPECTED_ARGV["image"]]


def test_enroot_starts_a_copy_of_the_pinned_rootfs_by_kubernetes_rule(tmp_path):
    site = CachedSite(tmp_path, "enroot")
    paths = site.materialize(CONTAINERS)
    result = site.run(paths.script)
    assert result.returncode == 0, result.stderr + result.stdout
    records = site.records()
    assert sorted(records) == ["args", "command", "image"]
    for case, record in records.items():
        argv = record["argv"]
        data = record["env"]["ENROOT_DATA_PATH"]
        assert data == str(Path(paths.container_dir(case)) / "rootfs")
        assert argv[:3] == ["start", "--rc", f"{data}.rc"] and argv[3] == "--rw"
        assert record["root_has_image"]  # the prepare step copied the rootfs, no import
        at = argv.index("--")
        name, workdir, *process = argv[at + 1 :]
        assert name.startswith("ilp-") and name.endswith(f"-{case}")
        assert workdir == EXPECTED_WORKDIR[case] and process == EXPECTED_ARGV[case]
        env = _enroot_env(argv[:at])
        assert env[0] == ("SLURM_JOB_ID", "42")  # the site's variables first, then the image's, then the pod's
        assert ("TRICKY", EVIL) in env
        greetings = [value for key, value in env if key == "GREETING"]
        assert greetings == (["image", "pod"] if case == "command" else ["image"])  # the last one wins
    rc = records["command"]["rc"]
    result = site.run(paths.script, "__exec", "0", "cat", EVIL)
    assert result.returncode == 0, result.stderr
    [record] = site.records().values()
    assert record["argv"][record["argv"].index("--") + 2 :] == ["/pod dir", "cat", EVIL]
    # The command script: the working directory (made when missing, as the kubelet does), then the process.
    script = tmp_path / "rc"
    script.write_text(rc)
    workdir = tmp_path / "a dir" / "made"
    shown = subprocess.run(
        ["sh", str(script), str(workdir), "sh", "-c", 'pwd; printf "%s\\n" "$1"', "x", EVIL],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == f"{workdir}\n{EVIL}\n"


def test_enroot_prepare_fails_without_the_pinned_image(tmp_path):
    site = CachedSite(tmp_path, "enroot")
    paths = site.materialize([CONTAINERS[2]])
    os.rename(site.image.rootfs, tmp_path / "gone")  # evicted, say
    result = site.run(paths.script)
    assert result.returncode == 128
    assert (Path(paths.container_dir("image")) / "reason").read_text().strip() == "ErrImagePull"
    assert not site.records()


LIBRARY = CORE_TEMPLATES / "runner" / "lib.sh"


# ------------------------------------------------------------------ the rendered launch lines


def _ctx(**kwargs: Any) -> LaunchContext:
    return LaunchContext(pod_dir="/p", rootfs="/p/c/rootfs", binds=(Bind("/p/v", "/data", read_only=True),), **kwargs)


def _container(**extra: Any) -> Any:
    spec, _, _ = render(pod([{"name": "c", "image": "busybox", **extra}]), "/pods")
    return spec.containers[0]


def test_the_switch_off_keeps_pulling_on_the_node():
    apptainer, enroot = ApptainerRuntime(), EnrootRuntime()
    assert not apptainer.uses_image_cache and not enroot.uses_image_cache
    launch = apptainer.launch(_container(args=["x"]), _ctx(image_pin="/c/p.sh"))
    assert "run" in launch.run and "docker://busybox" in launch.run and not launch.prepare
    launch = enroot.launch(_container(args=["x"]), _ctx(image_pin="/c/p.sh"))
    assert launch.prepare[0][:2] == ("enroot", "import")
    assert CharliecloudRuntime().uses_image_cache


def test_apptainer_with_the_switch_renders_its_pin():
    runtime = ApptainerRuntime(ApptainerConfig(image_cache=True))
    assert runtime.uses_image_cache
    container = _container(command=["sh"], args=["-c", EVIL], env=[{"name": "A", "value": EVIL}], workingDir="/w")
    launch = runtime.launch(container, _ctx(image_pin="/c/p.sh"))
    options = ["--containall", "--cleanenv", "--no-eval", "--bind", "/p/v:/data:ro"]
    tail = ("/w", "5", *options, "2", "HOSTNAME=p", f"A={EVIL}")  # the pod's env, as the kubelet adds it
    assert launch.run == ("ilp_apptainer", "/c/p.sh", "apptainer", "APPTAINERENV_", "command", *tail, "sh", "-c", EVIL)
    assert launch.exec_prefix == ("ilp_apptainer", "/c/p.sh", "apptainer", "APPTAINERENV_", "command", *tail)
    assert launch.prepare == (("ilp_pinned", "/c/p.sh"),)
    assert launch.passthrough_prefix == "APPTAINERENV_"
    assert runtime.launch(_container(), _ctx(image_pin="/c/p.sh")).run[4:6] == ("image", "")


def test_enroot_with_the_switch_renders_its_pin():
    runtime = EnrootRuntime(EnrootConfig(image_cache=True))
    assert runtime.uses_image_cache
    launch = runtime.launch(_container(args=["a b"]), _ctx(image_pin="/c/p.sh"))
    name = launch.run[4]
    assert launch.run[:4] == ("ilp_enroot", "/c/p.sh", "enroot", "/p/c/rootfs") and name.startswith("ilp-")
    assert launch.run[5:] == (
        "/p/c/rootfs.rc",
        "args",
        "",
        "3",
        "--rw",
        "--mount",
        "/p/v:/data:ro",
        "1",
        "HOSTNAME=p",
        "a b",
    )
    assert launch.prepare == (
        ("ilp_pinned", "/c/p.sh"),
        ("ilp_enroot_root", "/c/p.sh", "/p/c/rootfs", name, "/p/c/rootfs.rc"),
    )
    assert launch.exec_prefix == (
        *launch.run[:6],
        "command",
        "",
        "3",
        "--rw",
        "--mount",
        "/p/v:/data:ro",
        "1",
        "HOSTNAME=p",
    )
    assert launch.passthrough_flag == "--env"


@pytest.mark.parametrize(
    "runtime", [ApptainerRuntime(ApptainerConfig(image_cache=True)), EnrootRuntime(EnrootConfig(image_cache=True))]
)
def test_the_switch_needs_the_cache_and_no_image_root(runtime):
    with pytest.raises(PodRejected, match="image cache"):
        runtime.launch(_container(), _ctx())
    with pytest.raises(PodRejected, match="image-root"):
        runtime.launch(_container(), _ctx(image_pin="/c/p.sh", image_root="oras://"))


async def test_a_pod_of_a_cached_runtime_is_pinned_then_submitted(tmp_path):
    settings = ServiceSettings(
        state_dir=str(tmp_path / "state"),
        pods_root=str(tmp_path / "pods"),
        runtime={"default": "enroot", "enroot": {"image_cache": True}},
        images={"cache_dir": str(tmp_path / "cache")},
        create_wait_seconds=2,
    )
    backend, cache = InMemoryBackend(), ScriptedCache(tmp_path / "cache")
    store = Store(tmp_path / "state" / "db.sqlite")
    service = SiteService(settings, backend, store, files=InMemoryFiles(), images=cache)
    await service.load()
    try:
        created = await service.create(request(), ALICE)
        await wait_for(lambda: _async(bool(backend.called("submit"))), 5, interval=0.05, what="submitted")
        record = service.record(created.uid)
        assert record is not None and record.stage == Stage.SUBMITTED
        assert cache.asked == ["busybox"]
        assert (cache.root / "pins" / created.uid / "c.sh").exists()
    finally:
        await service.stop()
        await service.book.store.close()


async def _async(value: bool) -> bool:
    return value
