"""The pod runner (job.sh) executed directly with bash and real bubblewrap, no scheduler.

What Slurm adds (allocation, signals, accounting) is covered by the REST tests;
here the container semantics are exercised quickly and precisely.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sidecars.core.kits.script import RenderOptions
from tests.podkit import container_file, log_lines, materialize, pod

PAYLOAD = "$(touch /tmp/ilp-pwned) `touch /tmp/ilp-pwned` '; touch /tmp/ilp-pwned; '\n\"x\" \\ ${HOME} * ~"
FAST = RenderOptions(restart_backoff_seconds=1)


def run_job(paths, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", paths.script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )


@pytest.fixture
def pods_root(tmp_path):
    return tmp_path / "pods"


def test_init_containers_run_in_order_and_fail_fast(pods_root):
    p = pod(
        [{"name": "app", "image": "busybox", "command": ["sh", "-c", "echo should not run"]}],
        init=[
            {
                "name": "first",
                "image": "busybox",
                "command": ["sh", "-c", "echo first >> /shared/order"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            },
            {
                "name": "second",
                "image": "busybox",
                "command": ["sh", "-c", "cat /shared/order; exit 7"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            },
            {"name": "third", "image": "busybox", "command": ["true"]},
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    _, paths = materialize(p, pods_root)
    result = run_job(paths)
    assert result.returncode == 7
    assert log_lines(paths, "second") == ["first"]
    assert container_file(paths, "second", "exit_code") == "7"
    assert "second failed with exit code 7" in container_file(paths, "third", "skipped")
    assert container_file(paths, "app", "skipped") and container_file(paths, "app", "started_at") is None


def test_app_containers_run_in_parallel_and_keep_their_own_exit_codes(pods_root):
    mount = [{"name": "shared", "mountPath": "/shared"}]
    # Each waits for the other: this only finishes if both run at the same time.
    p = pod(
        [
            {
                "name": "a",
                "image": "busybox",
                "command": ["sh", "-c", "touch /shared/a; until [ -e /shared/b ]; do sleep 0.1; done; exit 3"],
                "volumeMounts": mount,
            },
            {
                "name": "b",
                "image": "busybox",
                "command": ["sh", "-c", "touch /shared/b; until [ -e /shared/a ]; do sleep 0.1; done"],
                "volumeMounts": mount,
            },
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    _, paths = materialize(p, pods_root)
    result = run_job(paths, timeout=30)
    assert result.returncode == 3
    assert container_file(paths, "a", "exit_code") == "3"
    assert container_file(paths, "b", "exit_code") == "0"


def test_injection_payloads_reach_the_container_literally(pods_root, tmp_path):
    marker = Path("/tmp/ilp-pwned")
    marker.unlink(missing_ok=True)
    p = pod(
        [
            {
                "name": "echo",
                "image": "busybox",
                "command": ["sh", "-c", 'printf "%s|" "$0" "$PAYLOAD"', PAYLOAD],
                "env": [{"name": "PAYLOAD", "value": PAYLOAD}],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hook", PAYLOAD]}}},
            }
        ],
        annotations={"slurm-job.vk.io/flags": "--comment='" + PAYLOAD.replace("'", "").replace("\n", " ") + "'"},
    )
    _, paths = materialize(p, pods_root)
    result = run_job(paths)
    assert result.returncode == 0, result.stderr
    assert "\n".join(log_lines(paths, "echo")) == f"{PAYLOAD}|{PAYLOAD}|"
    assert not marker.exists(), "a pod value was executed by the shell"


def test_sub_path_symlinks_cannot_escape_the_volume(pods_root):
    p = pod(
        [
            {
                "name": "reader",
                "image": "busybox",
                "command": ["sh", "-c", "ls /mnt/escaped"],
                "volumeMounts": [{"name": "data", "mountPath": "/mnt/escaped", "subPath": "link"}],
            }
        ],
        init=[
            {
                "name": "plant",
                "image": "busybox",
                "command": ["ln", "-s", "/etc", "/data/link"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    _, paths = materialize(p, pods_root)
    result = run_job(paths)
    assert result.returncode == 128
    assert container_file(paths, "reader", "reason") == "CreateContainerConfigError"
    assert (
        "resolves outside its volume" in "\n".join(log_lines(paths, "reader"))
        or "outside its volume" in Path(paths.container_dir("reader"), "log").read_text()
    )


def test_volumes_read_only_and_sub_paths(pods_root):
    cm = {"metadata": {"name": "cm"}, "data": {"app.conf": "key=value\n", "other": "x\n"}}
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "cat /etc/app/app.conf /conf/other; touch /ro/x 2>/dev/null && echo writable || echo read-only; "
                    "touch /rw/new && echo rw-ok; ls /sub",
                ],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/app/app.conf", "subPath": "app.conf"},
                    {"name": "cfg", "mountPath": "/conf"},
                    {"name": "scratch", "mountPath": "/ro", "readOnly": True},
                    {"name": "scratch", "mountPath": "/rw"},
                    {"name": "scratch", "mountPath": "/sub", "subPath": "made/by/kubelet"},
                ],
            }
        ],
        volumes=[{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "scratch", "emptyDir": {}}],
    )
    _, paths = materialize(p, pods_root, retrieved=[{"name": "c", "configMaps": [cm]}])
    result = run_job(paths)
    assert result.returncode == 0, Path(paths.container_dir("c"), "log").read_text()
    assert log_lines(paths, "c") == ["key=value", "x", "read-only", "rw-ok"]
    assert Path(paths.volume_dir("scratch"), "made", "by", "kubelet").is_dir()


def test_secret_files_are_private(pods_root):
    secret = {"metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}}
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["cat", "/s/token"],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}],
            }
        ],
        volumes=[{"name": "s", "secret": {"secretName": "s"}}],
    )
    _, paths = materialize(p, pods_root, retrieved=[{"name": "c", "secrets": [secret]}])
    token = Path(paths.volume_dir("s"), "token")
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    assert oct(Path(paths.pod_dir).stat().st_mode & 0o777) == "0o700"
    assert oct(Path(paths.script).stat().st_mode & 0o777) == "0o700"
    assert run_job(paths).returncode == 0
    assert log_lines(paths, "c") == ["secret"]


def test_logs_are_timestamped_lines(pods_root):
    p = pod([{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo one; echo two >&2; printf partial"]}])
    _, paths = materialize(p, pods_root)
    run_job(paths)
    raw = Path(paths.container_dir("c"), "log").read_text().splitlines()
    assert len(raw) == 3
    for line in raw:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line), line
    assert [line.split(" ", 1)[1] for line in raw] == ["one", "two", "partial"]


def test_on_failure_restarts_until_success(pods_root):
    p = pod(
        [
            {
                "name": "flaky",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "if [ -e /tmp/tried ]; then echo second try; else touch /tmp/tried; echo first try; exit 1; fi",
                ],
            }
        ],
        restart="OnFailure",
    )
    _, paths = materialize(p, pods_root, options=FAST)
    assert run_job(paths).returncode == 0
    assert container_file(paths, "flaky", "restarts") == "1"
    assert container_file(paths, "flaky", "exit_code") == "0"
    assert container_file(paths, "flaky", "last_state").startswith("1 ")
    assert log_lines(paths, "flaky") == ["second try"]
    previous = Path(paths.container_dir("flaky"), "log.previous").read_text()
    assert "first try" in previous


def test_liveness_failure_kills_the_container(pods_root):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sleep", "300"],
                "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2},
            }
        ]
    )
    _, paths = materialize(p, pods_root)
    started = time.monotonic()
    result = run_job(paths, timeout=60)
    assert time.monotonic() - started < 30
    assert container_file(paths, "c", "reason") == "LivenessProbeFailed"
    assert result.returncode == int(container_file(paths, "c", "exit_code")) == 143


def test_readiness_follows_the_probe(pods_root):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "sleep 2; touch /tmp/ready; sleep 3"],
                "readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/ready"]}, "periodSeconds": 1},
            }
        ]
    )
    _, paths = materialize(p, pods_root)
    process = subprocess.Popen(["bash", paths.script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set()
    while process.poll() is None:
        value = container_file(paths, "c", "ready")
        if value is not None and container_file(paths, "c", "exit_code") is None:
            seen.add(value)
        time.sleep(0.1)
    assert seen == {"0", "1"}, seen  # not ready, then ready
    assert container_file(paths, "c", "ready") == "0"  # exited: not ready


def test_post_start_failure_stops_the_container(pods_root):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sleep", "300"],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 4"]}}},
            }
        ]
    )
    _, paths = materialize(p, pods_root)
    result = run_job(paths, timeout=60)
    assert container_file(paths, "c", "reason") == "FailedPostStartHook"
    assert result.returncode != 0


def test_usr1_runs_pre_stop_then_terminates(pods_root):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo up; while true; do sleep 1; done"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo bye > /tmp/prestop"]}}},
            }
        ],
        terminationGracePeriodSeconds=5,
    )
    _, paths = materialize(p, pods_root)
    process = subprocess.Popen(["bash", paths.script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while container_file(paths, "c", "started_at") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGUSR1)
    process.wait(30)
    assert Path(paths.rootfs("c"), "tmp", "prestop").read_text() == "bye\n"
    assert container_file(paths, "c", "exit_code") == "143"
    assert Path(paths.pod_dir, "terminating").exists()


def test_usr2_before_the_time_limit_records_deadline_exceeded(pods_root):
    p = pod([{"name": "c", "image": "busybox", "command": ["sleep", "300"]}], terminationGracePeriodSeconds=2)
    _, paths = materialize(p, pods_root)
    process = subprocess.Popen(["bash", paths.script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while container_file(paths, "c", "started_at") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGUSR2)
    process.wait(30)
    assert container_file(paths, "c", "reason") == "DeadlineExceeded"
    assert container_file(paths, "c", "exit_code") == "143"


def test_host_path_directories_are_bound(pods_root, tmp_path):
    from interlink_provider.pods.policy import TranslationPolicy

    shared = tmp_path / "scratch"
    shared.mkdir()
    (shared / "input").write_text("from the host\n")
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "cat /data/input; echo out > /data/output"],
                "volumeMounts": [{"name": "h", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "h", "hostPath": {"path": str(shared), "type": "Directory"}}],
    )
    _, paths = materialize(p, pods_root, policy=TranslationPolicy(host_path_allow=[str(tmp_path)]))
    assert run_job(paths).returncode == 0
    assert log_lines(paths, "c") == ["from the host"]
    assert (shared / "output").read_text() == "out\n"


def test_pre_exec_runs_before_the_containers(pods_root):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["cat", "/shared/pre"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            }
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
        annotations={
            "slurm-job.vk.io/pre-exec": 'mkdir -p "$ILP_POD_DIR/volumes/shared"\n'
            'echo "pre-exec of $ILP_POD_NAME" > "$ILP_POD_DIR/volumes/shared/pre"'
        },
    )
    _, paths = materialize(p, pods_root, options=RenderOptions(allow_pre_exec=True))  # a site that allows it
    result = run_job(paths)
    assert result.returncode == 0, result.stderr
    assert log_lines(paths, "c") == ["pre-exec of p"]
