"""The sidecar's status page in a real browser (headless Chromium over the DevTools protocol):
it needs the API's token, shows the caller's running pod with its job id and owner beside the
scheduler's and IdP's health, and follows the pod to Succeeded by itself."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from tests.browser import Chromium
from tests.helpers import Sidecar, wait_for
from tests.idp import free_port, token_auth
from tests.integration.test_log_hygiene import secretive_pod
from tests.integration.test_site_auth import token_for

pytestmark = pytest.mark.slurm


@pytest.fixture
def page_sidecar(local_site, unix_accounts, idp, tmp_path):
    port = free_port()
    shared = Path(tempfile.mkdtemp(prefix="ilp-ui-"))
    shared.chmod(0o711)
    auth = token_auth(
        idp,
        [
            {"sub": "alice", "account": "ilp-alice"},
            {"sub": "bob", "account": "ilp-bob"},
            {"sub": "gateway", "account": "ilp-bob"},
        ],
    )
    auth["identities"]["site_admins"] = [{"issuer": idp.issuer, "sub": "gateway"}]  # reads every pod
    sidecar = Sidecar(
        tmp_path / "s",
        {
            "site_name": "ui-site",
            "pods_root": str(shared / "pods"),
            "listen": {"host": "127.0.0.1", "port": port},
            "status": {"poll_interval": 1},
            "auth": auth,
        },
    ).start()
    sidecar.url = f"http://127.0.0.1:{port}"
    yield sidecar
    sidecar.stop()


async def test_the_status_page_shows_a_running_pod_and_follows_it(page_sidecar, idp):
    alice, bob, admin = (await token_for(idp, "alice"), await token_for(idp, "bob"), await token_for(idp, "gateway"))
    request = secretive_pod("shown", "sleep 8; echo done")
    uid = request["pod"]["metadata"]["uid"]
    async with SidecarClient(page_sidecar.url, token=alice) as client:
        job_id = (await client.create(request))["PodJID"]
    row = f"#pod-{uid}"
    async with Chromium() as browser:
        await browser.goto(f"{page_sidecar.url}/ui")  # no token: refused as the API refuses it
        assert "missing_token" in (await browser.text("body") or "")

        await browser.headers({"Authorization": f"Bearer {alice}"})
        await browser.goto(f"{page_sidecar.url}/ui")

        async def running():
            return await browser.text(f"{row} .phase") == "Running"

        await wait_for(running, 60, what="the page to show the pod Running")  # by its own reloads
        assert await browser.text(f"{row} .job") == job_id
        cells = await browser.text(row) or ""
        assert "logs/shown" in cells and "ilp-alice" in cells and "alice@" in cells
        health = await browser.text("#health") or ""
        assert "Slurm (status poll)\tok" in health and f"IdP {idp.issuer}\tok" in health
        assert await browser.text("h1") == "Site ui-site"

        async def succeeded():
            return await browser.text(f"{row} .phase") == "Succeeded"

        await wait_for(succeeded, 90, what="the page to follow the pod to Succeeded")
        assert "Completed" in (await browser.text(f"{row} .reason") or "")

        await browser.headers({"Authorization": f"Bearer {bob}"})  # another identity sees none of it
        await browser.goto(f"{page_sidecar.url}/ui")
        assert await browser.text(row) is None and await browser.text("#no-pods") is not None

        await browser.headers({"Authorization": f"Bearer {admin}"})  # a site admin sees every pod
        await browser.goto(f"{page_sidecar.url}/ui")
        assert await browser.text(f"{row} .phase") == "Succeeded"
        assert "(site admin: every pod)" in (await browser.text("body") or "")
    async with SidecarClient(page_sidecar.url, token=admin) as client:  # reads it, may not act on it
        [status] = await client.status([pod_ref(uid)])
        assert status["UID"] == uid and (await client.whoami())["site_admin"] is True
        with pytest.raises(SidecarError) as refused:
            await client.delete(request["pod"])
        assert refused.value.status == 403
