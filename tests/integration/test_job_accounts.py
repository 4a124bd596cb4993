"""Jobs never run as root on their own: the local site's pods run as an unprivileged account, an
account that is root under another name is refused at create (403, nothing runs), root needs a
loudly named opt-in; pre-exec and runtime options need the site's consent."""

from __future__ import annotations

import subprocess

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods.phase import SUCCEEDED
from tests.helpers import LOCAL_CONFIG, Sidecar, pod_dir
from tests.integration.test_rest_api import request_for, run_until
from tests.podkit import pod

pytestmark = pytest.mark.slurm

TOOR = "ilp-toor"  # uid 0 under another name


@pytest.fixture(scope="module")
def root_alias():
    """An account with uid 0 (`useradd -o -u 0`), made for these tests and removed after."""
    made = False
    if subprocess.run(["id", TOOR], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "-o", "-u", "0", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", TOOR],
            check=True,
            capture_output=True,
        )
        made = True
    yield TOOR
    if made:
        subprocess.run(["userdel", "-f", TOOR], capture_output=True)  # -f: uid 0 always has processes


def whoami(name: str, annotations: dict | None = None, script: str = "id -un") -> dict:
    return request_for(
        pod([{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}], name=name, annotations=annotations)
    )


async def log_of(client: SidecarClient, req: dict) -> str:
    meta = req["pod"]["metadata"]
    return await client.logs_text({"PodUID": meta["uid"], "Namespace": meta["namespace"], "ContainerName": "c"})


async def test_tokenless_pods_of_the_local_site_run_as_its_job_account(sidecar):
    req = whoami("who")
    async with SidecarClient(sidecar.address) as client:
        await client.create(req)
        await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED)
        assert (await log_of(client, req)).strip() == "ilp-local"


async def test_an_account_with_uid_0_is_refused_at_create_and_runs_nothing(local_site, root_alias, tmp_path):
    sidecar = Sidecar(tmp_path / "s", {"auth": {"unix_socket_account": root_alias}}).start()
    try:
        reqs = [whoami("toor-1"), whoami("toor-2")]
        async with SidecarClient(sidecar.address) as client:
            for req in reqs:
                with pytest.raises(SidecarError) as refused:
                    await client.create(req)
                assert refused.value.status == 403
                assert f"{root_alias!r} has uid 0" in refused.value.message
                assert await client.status([pod_ref(req["pod"]["metadata"]["uid"])]) == []
        for req in reqs:
            assert sidecar.jobs_named(sidecar.prefix + req["pod"]["metadata"]["uid"]) == []
        assert not sidecar.pods_root.exists() or not list(sidecar.pods_root.iterdir())
        assert sidecar.log().count(f"refusing jobs as {root_alias}") == 1  # logged once
    finally:
        sidecar.stop()


def start_refused(tmp_path, overrides: dict) -> subprocess.CompletedProcess[str]:
    """The local site's config with `overrides`, started in the foreground as the site runs it."""
    return Sidecar(tmp_path / "refused", overrides).run_once()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"auth": {"unix_socket_account": "root"}}, "jobs never run as root unless the site sets"),
        ({"auth": {"unix_socket_account": "#0"}}, "is a uid"),
        ({"auth": {"unix_socket_account": ""}}, "empty account name"),
        ({"auth": {"unix_socket_account": "-x"}}, "starts with '-'"),
        ({"auth": {"unix_socket_account": None}}, "needs auth.unix_socket_account"),
        (
            {"auth": {"identities": {"rules": [{"sub": "alice", "account": "root"}]}}},
            "an account is root (auth.identities.rules[0].account)",
        ),
        ({"auth": {"identities": {"rules": [{"sub": "alice", "account": "#0"}]}}}, "is a uid"),
    ],
)
def test_a_sidecar_whose_jobs_could_run_as_root_does_not_start(local_site, tmp_path, overrides, reason):
    result = start_refused(tmp_path, overrides)
    assert result.returncode == 2 and "invalid configuration" in result.stderr
    assert reason in result.stderr


async def test_root_needs_the_loud_opt_in_and_is_warned_about(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s", {"auth": {"unix_socket_account": "root", "allow_jobs_as_root": True}}).start()
    try:
        req = whoami("as-root")
        async with SidecarClient(sidecar.address) as client:
            await client.create(req)
            await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED)
            assert (await log_of(client, req)).strip() == "root"
        warning = [line for line in sidecar.log().splitlines() if "allow_jobs_as_root is on" in line]
        assert len(warning) == 1 and "WARNING" in warning[0]
    finally:
        sidecar.stop()


PRE_EXEC = {"slurm-job.vk.io/pre-exec": 'id -un > "$ILP_POD_DIR/pre-exec-ran"'}
APPTAINER = {"interlink.provider/runtime": "apptainer", "slurm-job.vk.io/apptainer-options": "--cleanenv"}
OFFERS_APPTAINER = {"runtime": {"allowed": ["sandbox", "host", "apptainer"]}}


async def test_pre_exec_and_runtime_options_are_refused_unless_the_site_allows_them(local_site, tmp_path):
    closed = Sidecar(tmp_path / "closed", OFFERS_APPTAINER).start()
    try:
        async with SidecarClient(closed.address) as client:
            for annotations, setting in [
                (PRE_EXEC, "render.allow_pre_exec"),
                (APPTAINER, "render.allow_runtime_options"),
            ]:
                req = whoami("asks", annotations)
                with pytest.raises(SidecarError) as refused:
                    await client.create(req)
                assert refused.value.status == 422 and setting in refused.value.message
                assert closed.jobs_named(closed.prefix + req["pod"]["metadata"]["uid"]) == []
    finally:
        closed.stop()
    allowing = {**OFFERS_APPTAINER, "render": {"allow_pre_exec": True, "allow_runtime_options": True}}
    open_site = Sidecar(tmp_path / "open", allowing).start()
    try:
        async with SidecarClient(open_site.address) as client:
            req = whoami("pre", PRE_EXEC)
            uid = req["pod"]["metadata"]["uid"]
            await client.create(req)
            await run_until(client, uid, SUCCEEDED)
            assert (pod_dir(open_site.pods_root, "ns", uid) / "pre-exec-ran").read_text() == "ilp-local\n"
            options = whoami("options", APPTAINER)
            accepted = await client.create(options)  # no apptainer here: being accepted is the point
            assert accepted["PodUID"] == options["pod"]["metadata"]["uid"]
            await client.delete(options["pod"])
    finally:
        open_site.stop()


def test_doctor_names_accounts_that_are_missing_or_root(local_site, root_alias):
    from tests.integration.test_doctor import doctor

    code, checks = doctor(LOCAL_CONFIG)
    assert checks["job accounts"]["verdict"] == "ok" and "ilp-local (uid" in checks["job accounts"]["detail"]
    code, checks = doctor(LOCAL_CONFIG, auth__unix_socket_account=root_alias)
    assert code == 1 and checks["job accounts"]["verdict"] == "FAIL"
    assert f"uid 0 (root under another name): {root_alias}" in checks["job accounts"]["detail"]
    code, checks = doctor(LOCAL_CONFIG, auth__unix_socket_account="ilp-nobody-here")
    assert code == 1 and "no such account where jobs run: ilp-nobody-here" in checks["job accounts"]["detail"]
