"""Gangs (interlink_provider/pods/gang.py) on the real local Slurm: members held until the gang
is complete, then one job with one member per node, on the site's two nodes (localhost and the
isolated node in its network namespace, partition `all`); each member keeps its own statuses and
logs; the gang lives and dies together.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods.phase import FAILED, SUCCEEDED
from sidecars.core.domain.gangs import gang_job_name
from sidecars.core.kits.faults import EXIT_CODE
from tests.helpers import Sidecar, slurm, wait_for
from tests.integration.test_cli import cli
from tests.integration.test_rest_api import request_for, run_until
from tests.podkit import pod

ISOLATED_HOST_ADDR = "10.251.0.1"  # the login node's end of the isolated node's link (site.sh)
ISOLATED_NODE_ADDR = "10.251.0.2"

# Rank 0 serves the rendezvous, rank 1 meets it there: a real connection between the two nodes.
RANK0 = """
import os, socket
server = socket.create_server((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
connection, (peer, _) = server.accept()
said = connection.makefile().readline().strip()
print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} at {os.environ['MASTER_ADDR']}: {said} from {peer}")
"""
RANK1 = """
import os, socket, time
for _ in range(100):
    try:
        connection = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
        break
    except OSError:
        time.sleep(0.2)
connection.sendall(f"hello from rank {os.environ['RANK']}\\n".encode())
print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} sent, node rank {os.environ['PET_NODE_RANK']}")
"""


@pytest.fixture
def gang_sidecar(local_site, tmp_path):
    instance = Sidecar(tmp_path / "sidecar", {"slurm": {"partition": "all"}}).start()
    yield instance
    instance.stop()


def member(gang: str, index: int, command: list[str], size: int = 2, env: list | None = None, **kwargs) -> dict:
    annotations = {"interlink.provider/gang": gang, "interlink.provider/gang-size": str(size)}
    annotations["batch.kubernetes.io/job-completion-index"] = str(index)
    containers = [{"name": "worker", "image": "python", "command": command, "env": env or []}]
    return request_for(pod(containers, name=f"{gang}-{index}", annotations=annotations, **kwargs))


async def logs(client: SidecarClient, req: dict) -> str:
    meta = req["pod"]["metadata"]
    return await client.logs_text({"PodUID": meta["uid"], "Namespace": "ns", "ContainerName": "worker"})


async def create_all(client: SidecarClient, reqs: list[dict]) -> None:
    for req in reqs:
        await client.create(req)


async def every_member(
    client: SidecarClient, uids: list[str], reached: Callable[[dict], bool], what: str, timeout: float
) -> list[dict]:
    """The members' statuses once every one of them has `reached` a state."""

    async def all_there():
        answers = await client.status([pod_ref(uid) for uid in uids])
        return answers if len(answers) == len(uids) and all(reached(a) for a in answers) else None

    return await wait_for(all_there, timeout, what=f"every member {what}")


def waiting_reason(answer: dict) -> str:
    return answer["containers"][0]["state"].get("waiting", {}).get("reason", "")


async def test_a_gang_waits_for_all_its_members_then_runs_one_per_node_and_they_meet(gang_sidecar):
    # As the PyTorch operator makes them: a rendezvous the site cannot reach, which the site's replaces.
    operator = [{"name": "MASTER_ADDR", "value": "train-master-0"}, {"name": "MASTER_PORT", "value": "23456"}]
    first = member("train", 0, ["python3", "-c", RANK0], env=operator)
    second = member("train", 1, ["python3", "-c", RANK1], env=operator)
    uids = [r["pod"]["metadata"]["uid"] for r in (first, second)]
    async with SidecarClient(gang_sidecar.address) as client:
        created = await client.create(first)
        assert created["PodJID"] == ""  # held: no job for half a gang

        async def held():
            answer = (await client.status([pod_ref(uids[0])]))[0]
            return answer if waiting_reason(answer) == "GangWaiting" else None

        answer = await wait_for(held, 30, what="GangWaiting")
        assert "1 of 2 members" in answer["containers"][0]["state"]["waiting"]["message"]
        assert gang_sidecar.jobs_named(gang_sidecar.prefix + uids[0]) == []

        await client.create(second)
        finals = [await run_until(client, uid, SUCCEEDED, timeout=120) for uid in uids]
        [job] = {final["JID"] for final in finals}  # one job for both
        assert slurm("squeue", "-h", "--states=all", "-j", job, "-o", "%N %D").split() == ["isolated1,localhost", "2"]
        # Each member's own log: rank 0 ran on the isolated node, rank 1 reached it from localhost.
        assert (await logs(client, first)).strip() == (
            f"rank 0 of 2 at {ISOLATED_NODE_ADDR}: hello from rank 1 from {ISOLATED_HOST_ADDR}"
        )
        assert (await logs(client, second)).strip() == "rank 1 of 2 sent, node rank 1"


async def test_a_member_that_fails_ends_its_gang(gang_sidecar):
    quitter = member("quits", 0, ["sh", "-c", "sleep 2; exit 3"])
    stayer = member("quits", 1, ["sh", "-c", "trap 'echo stopped; exit 0' TERM; sleep 300 & wait"])
    async with SidecarClient(gang_sidecar.address) as client:
        await create_all(client, [quitter, stayer])
        failed = await run_until(client, quitter["pod"]["metadata"]["uid"], FAILED, timeout=120)
        assert failed["containers"][0]["state"]["terminated"]["exitCode"] == 3
        # The other member is stopped as a deletion stops it (TERM to its container), well
        # before its sleep would have ended.
        stopped = await run_until(client, stayer["pod"]["metadata"]["uid"], SUCCEEDED, timeout=60)
        assert stopped["containers"][0]["state"]["terminated"]["exitCode"] == 0
        assert (await logs(client, stayer)).strip() == "stopped"


async def test_deleting_a_member_ends_its_gang(gang_sidecar):
    reqs = [
        member("deleted", i, ["sh", "-c", "echo up; trap 'echo stopped; exit 0' TERM; sleep 300 & wait"])
        for i in (0, 1)
    ]
    uids = [r["pod"]["metadata"]["uid"] for r in reqs]
    async with SidecarClient(gang_sidecar.address) as client:
        await create_all(client, reqs)
        await every_member(client, uids, lambda a: "running" in a["containers"][0]["state"], "running", 120)
        await client.delete(reqs[0]["pod"])
        # The survivor's container is stopped gracefully (its trap ran), and its job is gone.
        await run_until(client, uids[1], SUCCEEDED, timeout=60)
        assert (await logs(client, reqs[1])).strip() == "up\nstopped"


async def test_a_sidecar_killed_after_submitting_a_gang_adopts_its_job_once(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s", {"slurm": {"partition": "all"}}).start(env={"ILP_FAULT": "after-submit"})
    reqs = [member("crash", i, ["sh", "-c", "echo done"]) for i in (0, 1)]
    uids = [r["pod"]["metadata"]["uid"] for r in reqs]
    name = gang_job_name(sidecar.prefix, uids)
    async with SidecarClient(sidecar.address) as client:
        await client.create(reqs[0])  # held: nothing submitted, the daemon lives on
        with pytest.raises(aiohttp.ClientError):
            await client.create(reqs[1])  # the gang's sbatch runs, then the daemon dies
    assert sidecar.process.wait(10) == EXIT_CODE
    jobs = sidecar.jobs_named(name)
    assert len(jobs) == 1, "sbatch ran once before the crash"
    sidecar.start()  # without the fault, same state directory
    try:
        async with SidecarClient(sidecar.address) as client:
            finals = [await run_until(client, uid, SUCCEEDED, timeout=120) for uid in uids]
        assert [final["JID"] for final in finals] == jobs * 2
        assert sidecar.jobs_named(name) == jobs, "no second job was submitted"
        assert "adopting job" in sidecar.log()
    finally:
        sidecar.stop()


async def test_a_gang_larger_than_the_partition_waits_with_slurm_s_reason_until_deleted(gang_sidecar):
    reqs = [member("big", i, ["true"], size=3) for i in range(3)]  # partition all has two nodes
    uids = [r["pod"]["metadata"]["uid"] for r in reqs]
    async with SidecarClient(gang_sidecar.address) as client:
        await create_all(client, reqs)
        told = "PartitionNodeLimit"
        answers = await every_member(client, uids, lambda a: waiting_reason(a) == told, told, 60)
        [job] = {a["JID"] for a in answers}
        assert "partition" in answers[0]["containers"][0]["state"]["waiting"]["message"].lower()
        await client.delete(reqs[0]["pod"])  # one member deleted: the gang's job is cancelled
        await wait_for(lambda: _gone(job), 30, what=f"job {job} cancelled")


async def _gone(job: str) -> bool:
    return slurm("squeue", "-h", "-j", job, "-o", "%T").strip() in ("", "CANCELLED")


def test_the_gang_training_example_all_reduces_over_both_nodes(sidecar):
    """examples/gang-training.yaml as a user runs it (its flags pick partition all)."""
    result = cli(sidecar, "run", "--rm", "examples/gang-training.yaml", "--timeout", "120", timeout=180)
    assert result.returncode == 0, result.stderr
    assert "result: ddp-0 Succeeded, ddp-1 Succeeded" in result.stderr
    for rank in (0, 1):
        assert f"rank {rank} of 2 on ddp-{rank}: all-reduced gradient 3.0" in result.stdout


def test_an_indexed_job_run_from_the_cli_is_one_gang_ranked_by_completion_index(sidecar, tmp_path):
    job = tmp_path / "indexed.yaml"
    job.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: ranks}\nspec:\n"
        "  completions: 2\n  completionMode: Indexed\n  backoffLimit: 0\n  template:\n"
        "    metadata:\n      annotations:\n        interlink.provider/gang: ranks\n"
        "        interlink.provider/gang-size: '2'\n        slurm-job.vk.io/flags: --partition=all\n"
        "    spec:\n      restartPolicy: Never\n      containers:\n"
        "      - {name: c, image: busybox, command: [sh, -c, 'echo $HOSTNAME rank $RANK of $WORLD_SIZE']}\n"
    )
    result = cli(sidecar, "run", "--rm", str(job), "--timeout", "120", timeout=180)
    assert result.returncode == 0, result.stderr
    assert re.search(r"result: ranks-0-\w+ Succeeded, ranks-1-\w+ Succeeded", result.stderr)
    # Each index's own pod (its HOSTNAME: the pod's name) has the rank of its completion index.
    assert sorted(re.findall(r"ranks-(\d)-\w+ rank (\d) of 2", result.stdout)) == [("0", "0"), ("1", "1")]


async def test_a_gang_s_time_limit_reaches_every_member_as_deadline_exceeded(gang_sidecar):
    """activeDeadlineSeconds is the gang job's --time; the USR2 Slurm sends its batch script before
    the limit reaches each member's runner, which stops its containers as DeadlineExceeded."""
    reqs = [
        member("deadline", i, ["sleep", "300"], activeDeadlineSeconds=60, terminationGracePeriodSeconds=1)
        for i in (0, 1)
    ]
    uids = [r["pod"]["metadata"]["uid"] for r in reqs]
    async with SidecarClient(gang_sidecar.address) as client:
        await create_all(client, reqs)
        finals = [await run_until(client, uid, FAILED, timeout=90) for uid in uids]
    assert [f["containers"][0]["state"]["terminated"]["reason"] for f in finals] == ["DeadlineExceeded"] * 2
