"""The podman runtime (#19): the rendered launch lines, and the job script itself run by bash with a
test double of `podman` that records how `podman run` and `podman exec` were started (the real one
runs in tests/integration/test_podman.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interlink_provider.images import pins
from interlink_provider.pods.validate import PodRejected
from interlink_provider.runtimes import Bind, LaunchContext, RuntimeConfig, make_runtime
from interlink_provider.runtimes.podman import PodmanConfig, PodmanRuntime
from sidecars.core.kits.script import RenderOptions
from tests.podkit import materialize, pod, render
from tests.unit.test_cached_image_runtimes import CONTAINERS, EVIL, EXPECTED_ARGV, EXPECTED_WORKDIR, cached_image

FAKE_PODMAN = """#!{python}
# A test double of podman: `run` and `exec` are recorded in $ILP_FAKE_OUT; everything else succeeds
# (and every container is running).
import json, os, sys, tempfile
argv = sys.argv[1:]
verb = next((word for word in argv if word in ("run", "exec")), None)
if verb:
    record = {{"argv": argv, "env": dict(os.environ), "verb": verb}}
    fd, path = tempfile.mkstemp(dir=os.environ["ILP_FAKE_OUT"], suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
if argv[-4:-1] == ["inspect", "--format", "{{{{.State.Status}}}}"]:
    print("running")
sys.exit(int(os.environ.get("ILP_FAKE_EXIT", "0")) if verb == "run" else 0)
"""


@pytest.fixture(autouse=True)
def no_pwned():
    yield
    assert not Path("/tmp/ilp-pwned").exists()


class PodmanSite:
    """A pod's job script for the podman runtime, pinned as the sidecar pins it, with the fake first
    on PATH and GPU device files of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp, self.cache, self.out = tmp_path, tmp_path / "cache", tmp_path / "out"
        self.out.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "podman"
        fake.write_text(FAKE_PODMAN.format(python=sys.executable))
        fake.chmod(0o755)
        self.devices = tmp_path / "dev"
        self.devices.mkdir()
        for name in ("gpu0", "gpu1"):
            (self.devices / name).touch()
        self.config = RuntimeConfig(default="podman", podman=PodmanConfig(gpu_devices=[f"{self.devices}/gpu*"]))
        self.image = cached_image(self.cache)

    def materialize(self, containers: list[dict[str, Any]]) -> Any:
        p = pod(containers)
        for container in containers:
            pins.Pins(self.cache).write(p["metadata"]["uid"], container["name"], self.image)
        options = RenderOptions(image_cache=str(self.cache))
        _, paths = materialize(p, self.tmp / "pods", runtime="podman", runtime_config=self.config, options=options)
        return paths

    def run(self, script: str, *args: str, exit_code: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.tmp / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "ILP_FAKE_OUT": str(self.out),
            "ILP_FAKE_EXIT": str(exit_code),
            "TMPDIR": str(self.tmp),
            "SLURM_JOB_ID": "42",
        }
        return subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60, env=env)

    def records(self) -> list[dict[str, Any]]:
        found = [json.loads(path.read_text()) for path in sorted(self.out.glob("*.json"))]
        for path in self.out.glob("*.json"):
            path.unlink()
        return found


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [word for before, word in itertools.pairwise(argv) if before == flag]


def test_the_job_runs_the_pinned_rootfs_by_kubernetes_rule(tmp_path):
    site = PodmanSite(tmp_path)
    paths = site.materialize(CONTAINERS)
    result = site.run(paths.script)
    assert result.returncode == 0, result.stderr
    records = {dict(w.split("=", 1) for w in _pairs(r["argv"], "-e"))["CASE"]: r for r in site.records()}
    assert sorted(records) == ["args", "command", "image"]
    rootfs = f"{site.image.rootfs}:O"
    for case, record in records.items():
        argv = record["argv"]
        at = argv.index(rootfs)
        assert argv[at - 1] == "--rootfs" and argv[at + 1 :] == EXPECTED_ARGV[case]
        state = record["env"]["XDG_RUNTIME_DIR"].removesuffix("/xdg")
        assert Path(state).parent == tmp_path  # node-local temporary space, of this container alone
        assert argv[:6] == ["--root", f"{state}/root", "--runroot", f"{state}/run", "--runtime", "runc"]
        assert record["env"]["HOME"] == f"{state}/home"
        assert not Path(state).exists()  # removed once the container ended
        options = argv[argv.index("run") : at]
        assert _pairs(options, "--name") == [f"ilp-{_key(paths)}-{case}"]
        assert _pairs(options, "-w") == [EXPECTED_WORKDIR[case]]
        # the image lacks it: an empty directory of the container's own stands for it, as the kubelet makes one
        assert _pairs(options, "-v")[-1] == f"{state}/workdir:{EXPECTED_WORKDIR[case]}"
        assert _pairs(options, "--user") == ["0:0"] and "--userns" not in options  # the image names no user
        devices = sorted(_pairs(options, "--device"))
        assert devices == ([str(site.devices / "gpu0"), str(site.devices / "gpu1")] if case == "args" else [])
        env = _pairs(options, "-e")
        assert env[0] == "SLURM_JOB_ID=42"  # the site's variables, the image's Env, then the pod's
        assert f"TRICKY={EVIL}" in env
        greetings = [word for word in env if word.startswith("GREETING=")]
        assert greetings == (["GREETING=image", "GREETING=pod"] if case == "command" else ["GREETING=image"])
    # kubectl exec, exec probes and hooks: podman exec in the same state, once it is running
    state = tmp_path / "state"
    Path(paths.container_dir("command"), "podman_state").write_text(f"{state}\n")
    result = site.run(paths.script, "__exec", "0", "cat", EVIL)
    assert result.returncode == 0, result.stderr
    [record] = site.records()
    argv = record["argv"]
    assert argv[:4] == ["--root", f"{state}/root", "--runroot", f"{state}/run"]
    assert argv[argv.index("exec") :] == [
        "exec",
        "-i",
        "-e",
        "SLURM_JOB_ID=42",
        f"ilp-{_key(paths)}-command",
        "cat",
        EVIL,
    ]


def test_an_image_user_runs_as_the_pods_account_through_keep_id(tmp_path):
    site = PodmanSite(tmp_path)
    paths = site.materialize([CONTAINERS[2]])
    pin = Path(site.cache, "pins").rglob("image.sh").__next__()
    pin.write_text(pin.read_text().replace("ILP_IMAGE_UID=0", "ILP_IMAGE_UID=1000").replace("GID=0", "GID=100"))
    assert site.run(paths.script, exit_code=7).returncode == 7  # the container's exit code, as it is
    [record] = site.records()
    assert _pairs(record["argv"], "--user") == ["1000:100"]
    assert _pairs(record["argv"], "--userns") == ["keep-id:uid=1000,gid=100"]


def _key(paths: Any) -> str:
    """The pod's part of its containers' podman names."""
    return hashlib.sha1(paths.pod_dir.encode()).hexdigest()[:10]


# ------------------------------------------------------------------ the rendered launch lines


def _container(**extra: Any) -> Any:
    spec, _, _ = render(pod([{"name": "c", "image": "busybox", **extra}]), "/pods")
    return spec.containers[0]


def _ctx(*binds: Bind, **kwargs: Any) -> LaunchContext:
    default = (Bind("/p/v", "/data", read_only=True), Bind("/p/w", "/work"))
    return LaunchContext(pod_dir="/p", rootfs="/p/c/rootfs", binds=binds or default, **kwargs)


GLOBAL = ["--runtime", "runc", *PodmanConfig().global_options]


@pytest.mark.parametrize(
    ("extra", "mode", "words"),
    [
        ({"command": ["sh"], "args": ["-c", EVIL]}, "command", ["sh", "-c", EVIL]),
        ({"args": ["a b"]}, "args", ["a b"]),
        ({}, "image", []),
    ],
)
def test_the_launch_line_names_the_pin_and_the_pods_words(extra, mode, words):
    runtime = make_runtime("podman", RuntimeConfig())
    assert isinstance(runtime, PodmanRuntime) and runtime.uses_image_cache
    launch = runtime.launch(
        _container(env=[{"name": "A", "value": EVIL}], workingDir="/w", **extra), _ctx(image_pin="/c/p.sh")
    )
    head = ("/c/p.sh", "podman", launch.run[3])
    assert launch.run[:4] == ("ilp_podman", *head) and head[2].startswith("ilp-") and head[2].endswith("-c")
    options = ["-v", "/p/v:/data:ro", "-v", "/p/w:/work"]
    assert launch.run[4:] == (
        mode,
        "/w",
        str(len(GLOBAL)),
        *GLOBAL,
        str(len(options)),
        *options,
        "0",  # no GPU devices: the container asks for none
        "2",
        "HOSTNAME=p",
        f"A={EVIL}",
        *words,
    )
    assert launch.exec_prefix == ("ilp_podman_exec", *head, str(len(GLOBAL)), *GLOBAL)
    assert launch.prepare == (("ilp_pinned", "/c/p.sh"),)
    assert launch.passthrough_flag == "-e" and launch.passthrough_prefix == ""


def test_gpu_devices_only_for_a_container_that_asks_for_gpus():
    runtime = PodmanRuntime(PodmanConfig(gpu_devices=["/dev/nvidia*"], options=["--security-opt", "x"]))
    gpus = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    launch = runtime.launch(_container(**gpus), _ctx(Bind("/s", "/t"), image_pin="/c/p.sh", extra_options=("--", "y")))
    at = launch.run.index("/s:/t")
    assert launch.run[at - 2 :] == (
        "6",
        "-v",
        "/s:/t",
        "--security-opt",
        "x",
        "--",
        "y",
        "1",
        "/dev/nvidia*",
        "1",
        "HOSTNAME=p",
    )
    plain = runtime.launch(_container(), _ctx(Bind("/s", "/t"), image_pin="/c/p.sh"))
    assert plain.run[-3:] == ("0", "1", "HOSTNAME=p")


def test_the_runtime_needs_the_cache_and_no_colon_in_mounts():
    runtime = PodmanRuntime()
    with pytest.raises(PodRejected, match="image cache"):
        runtime.launch(_container(), _ctx())
    with pytest.raises(PodRejected, match="':'"):
        runtime.launch(_container(), _ctx(Bind("/p/a:b", "/t"), image_pin="/c/p.sh"))
    with pytest.raises(PodRejected, match="':'"):
        runtime.launch(_container(workingDir="/w:U"), _ctx(image_pin="/c/p.sh"))
