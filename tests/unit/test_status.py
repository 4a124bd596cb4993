"""Container statuses and phases from scheduler state and runner files."""

from __future__ import annotations

from interlink_provider.pods.phase import FAILED, PENDING, RUNNING, SUCCEEDED, vk_phase
from sidecars.core.domain.status import ContainerInfo, PodView, pod_statuses
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import JobInfo
from sidecars.core.kits.workdir import ContainerFiles

INIT = ContainerInfo("init", "busybox", True, "Never")
APP = ContainerInfo("app", "busybox", False, "Never")
T0, T1 = "2026-01-01T00:00:01.123456789Z", "2026-01-01T00:00:09.000000000Z"


def view(job, files, **kwargs):
    return PodView(containers=[INIT, APP], job=job, files=files, **kwargs)


def states(v):
    init, apps = pod_statuses(v)
    return init[0]["state"], apps[0]["state"], vk_phase(init, apps)


def test_pending_job_shows_the_slurm_reason():
    init, _app, phase = states(view(JobInfo("7", b.PENDING, "Resources"), {}))
    assert init == {"waiting": {"reason": "Resources", "message": "Slurm job 7 is pending: Resources"}}
    assert phase == PENDING


def test_app_waits_for_init_then_runs():
    running = JobInfo("7", b.RUNNING)
    init, app, phase = states(view(running, {"init": ContainerFiles(started_at=T0)}))
    assert "running" in init and app == {"waiting": {"reason": "PodInitializing"}} and phase == PENDING
    files = {
        "init": ContainerFiles(started_at=T0, finished_at=T1, exit_code=0),
        "app": ContainerFiles(started_at=T1, ready=True),
    }
    init, app, phase = states(view(running, files))
    assert init["terminated"]["reason"] == "Completed" and init["terminated"]["startedAt"] == "2026-01-01T00:00:01Z"
    assert app == {"running": {"startedAt": "2026-01-01T00:00:09Z"}} and phase == RUNNING


def test_init_failure_terminates_the_containers_that_never_ran():
    files = {
        "init": ContainerFiles(started_at=T0, finished_at=T1, exit_code=3),
        "app": ContainerFiles(skipped="init container init failed with exit code 3"),
    }
    init, app, phase = states(view(JobInfo("7", b.FAILED), files))
    assert init["terminated"]["exitCode"] == 3 and init["terminated"]["reason"] == "Error"
    assert app["terminated"]["reason"] == "InitContainerFailed"
    assert phase == FAILED


def test_job_end_states_explain_unfinished_containers():
    started = {"init": ContainerFiles(exit_code=0), "app": ContainerFiles(started_at=T0)}
    for state, reason, code in (
        (b.TIMEOUT, "DeadlineExceeded", 143),
        (b.OUT_OF_MEMORY, "OOMKilled", 137),
        (b.CANCELLED, "Cancelled", 143),
        (b.NODE_FAIL, "NodeFailure", 1),
    ):
        _, app, phase = states(view(JobInfo("7", state), started))
        assert app["terminated"]["reason"] == reason and app["terminated"]["exitCode"] == code
        assert phase == FAILED


def test_oom_killed_container_with_its_exit_code():
    files = {"init": ContainerFiles(exit_code=0), "app": ContainerFiles(started_at=T0, exit_code=137)}
    _, app, _ = states(view(JobInfo("7", b.OUT_OF_MEMORY), files))
    assert app["terminated"]["reason"] == "OOMKilled"


def test_time_limit_kill_says_deadline_exceeded():
    files = {"init": ContainerFiles(exit_code=0), "app": ContainerFiles(started_at=T0, exit_code=143)}
    _, app, _ = states(view(JobInfo("7", b.TIMEOUT), files))
    assert app["terminated"]["reason"] == "DeadlineExceeded" and app["terminated"]["exitCode"] == 143


def test_restarting_containers_wait_in_crash_loop_back_off():
    always = ContainerInfo("app", "busybox", False, "Always")
    files = {"app": ContainerFiles(started_at=T0, exit_code=1, restarts=2, last_state=(1, T0, T1))}
    v = PodView(containers=[always], job=JobInfo("7", b.RUNNING), files=files)
    _, [app] = pod_statuses(v)
    assert app["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert app["restartCount"] == 2 and app["lastState"]["terminated"]["exitCode"] == 1


def test_lost_job_fails_with_a_reason():
    _, app, phase = states(
        view(None, {"init": ContainerFiles(exit_code=0), "app": ContainerFiles(started_at=T0)}, lost=True)
    )
    assert app["terminated"]["reason"] == "JobLost" and phase == FAILED


def test_vk_phase_rules():
    term = lambda code: {"state": {"terminated": {"exitCode": code}}}  # noqa: E731
    run = {"state": {"running": {}}}
    wait = {"state": {"waiting": {}}}
    assert vk_phase([], [term(0), term(0)]) == SUCCEEDED
    assert vk_phase([term(1)], [term(0)]) == FAILED
    assert vk_phase([], [term(0), run]) == RUNNING
    assert vk_phase([run], [wait]) == PENDING
    assert vk_phase([term(0)], [wait]) == PENDING
