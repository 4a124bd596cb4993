"""The SQLite store's guarantees, and the configuration's strictness and documentation."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from sidecars.core.domain.records import ContainerInfo, PodRecord, PodStatuses, PodSummary, Stage
from sidecars.core.domain.store import Store
from sidecars.daemon.config import SiteConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def record(uid: str) -> PodRecord:
    return PodRecord(
        uid=uid,
        namespace="ns",
        name="p",
        pod_dir="/x",
        job_name="ilp-" + uid,
        stage=Stage.SUBMITTING,
        summary=PodSummary(containers=(ContainerInfo("c", "busybox", False, "Never"),)),
    )


def test_insert_is_idempotent_and_updates_survive_reopening(tmp_path):
    async def go():
        store = Store(tmp_path / "db.sqlite")
        await store.open()
        first, new = await store.insert(record("u1"))
        again, new_again = await store.insert(record("u1"))
        assert new and not new_again and again.created_at == first.created_at
        statuses = PodStatuses(apps=({"name": "c", "state": {"running": {}}},))
        updated = await store.update("u1", stage=Stage.SUBMITTED, job_id="42", status=statuses)
        assert updated.revision > first.revision
        await store.close()
        reopened = Store(tmp_path / "db.sqlite")
        await reopened.open()
        got = await reopened.get("u1")
        assert (got.stage, got.job_id, got.status) == (Stage.SUBMITTED, "42", statuses)
        assert got.summary == record("u1").summary
        assert [r.uid for r in await reopened.by_stage(Stage.SUBMITTED)] == ["u1"]
        await reopened.close()

    asyncio.run(go())
    assert oct(os.stat(tmp_path / "db.sqlite").st_mode & 0o777) == "0o600"


def test_the_submitting_commit_is_synced_and_no_other(tmp_path):
    """A power loss must not roll back SUBMITTING (the pod would be submitted again without the
    by-name look-up): that commit runs under synchronous=FULL, every other under NORMAL. Observed
    through SQLite's statement trace: the level in force at each write."""

    async def go():
        store = Store(tmp_path / "db.sqlite")
        await store.open()
        levels: list[tuple[str, str]] = []
        level = ["NORMAL"]

        def trace(statement: str) -> None:
            if statement.startswith("PRAGMA synchronous="):
                level[0] = statement.split("=", 1)[1]
            elif statement.startswith(("UPDATE pods", "INSERT INTO pods")):
                levels.append((statement.split()[0], level[0]))

        await store._call(store.db.set_trace_callback, trace)
        await store.insert(replace(record("u1"), stage=Stage.ACCEPTED))
        await store.update("u1", stage=Stage.SUBMITTING)
        await store.update("u1", stage=Stage.SUBMITTED, job_id="42")
        await store.insert(record("u2"))  # created SUBMITTING
        await store.update("u2", message="no stage change")
        synchronous = await store._call(lambda: store.db.execute("PRAGMA synchronous").fetchone()[0])
        await store.close()
        return levels, synchronous

    levels, synchronous = asyncio.run(go())
    assert levels == [
        ("INSERT", "NORMAL"),
        ("UPDATE", "FULL"),
        ("UPDATE", "NORMAL"),
        ("INSERT", "FULL"),
        ("UPDATE", "NORMAL"),
    ]
    assert synchronous == 1  # NORMAL again after


def test_unknown_columns_are_refused(tmp_path):
    async def go():
        store = Store(tmp_path / "db.sqlite")
        await store.open()
        await store.insert(record("u1"))
        with pytest.raises(ValueError):
            await store.update("u1", stage="x", bogus=1)
        await store.close()

    asyncio.run(go())


def test_unknown_keys_are_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: {socket: /tmp/s}\nstate_dir: s\npods_root: p\nstatus: {poll_intervall: 3}\n"
        "auth: {unix_socket_without_token: true, unix_socket_account: jobs}\n"
    )
    with pytest.raises(ValidationError) as info:
        load_config(config, {})
    assert "poll_intervall" in str(info.value)


def test_env_overrides_and_relative_paths(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: {socket: run/s.sock}\nstate_dir: $BASE/state\npods_root: pods\n"
        "auth: {unix_socket_without_token: true, unix_socket_account: jobs}\n"
    )
    loaded = load_config(config, {"BASE": "/srv", "ILP__status__poll_interval": "2.5", "ILP__max_pods": "7"})
    assert loaded.state_dir == "/srv/state" and loaded.pods_root == str(tmp_path / "pods")
    assert loaded.listen.socket == str(tmp_path / "run" / "s.sock")
    assert loaded.status.poll_interval == 2.5 and loaded.max_pods == 7


def test_a_bad_env_override_is_refused_by_its_variable_name(tmp_path):
    """An ILP__ variable is named in the error it causes, whichever way it is wrong (never a TypeError)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: {socket: /tmp/s}\nstate_dir: s\npods_root: p\nstatus: 5\n"
        "auth: {unix_socket_without_token: true, unix_socket_account: jobs}\n"
    )
    with pytest.raises(ValueError, match=r"ILP__status__poll_interval: status is 5 \(in the file\), not a section"):
        load_config(config, {"ILP__status__poll_interval": "2"})
    config.write_text(config.read_text().replace("status: 5\n", ""))
    # the section's variable first, whatever the environment's order: its keys' variables are refused
    variables = {"ILP__status__poll_interval": "2", "ILP__status": "fast"}
    with pytest.raises(ValueError, match=r"ILP__status__poll_interval: status is 'fast' \(set by ILP__status\)"):
        load_config(config, variables)
    with pytest.raises(ValueError, match=r"ILP__max_pods: not a YAML value: '\[1'"):
        load_config(config, {"ILP__max_pods": "[1"})
    with pytest.raises(ValidationError) as info:
        load_config(config, {"ILP__status__poll_interval": "soon"})
    assert [error["loc"] for error in info.value.errors()] == [
        ("status", "poll_interval (set by ILP__status__poll_interval)")
    ]
    with pytest.raises(ValidationError) as info:  # set through its section's variable: that one is named
        load_config(config, {"ILP__status": "{poll_interval: soon}"})
    assert [error["loc"] for error in info.value.errors()] == [("status", "poll_interval (set by ILP__status)")]
    config.write_text(config.read_text() + "status: {poll_intervall: 3}\n")
    with pytest.raises(ValidationError) as info:  # an error of the file names no variable, though others are set
        load_config(config, {"ILP__max_pods": "7", "ILP__status__poll_interval": "2"})
    assert [error["loc"] for error in info.value.errors()] == [("status", "poll_intervall")]


def test_a_sidecar_nobody_could_use_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {socket: /tmp/s}\nstate_dir: s\npods_root: p\n")
    with pytest.raises(ValidationError) as info:
        load_config(config, {})
    assert "nobody could use this sidecar" in str(info.value)
    config.write_text(
        "listen: {host: 127.0.0.1, port: 4000}\nstate_dir: s\npods_root: p\n"
        "auth: {unix_socket_without_token: true, unix_socket_account: jobs}\n"
    )
    with pytest.raises(ValidationError) as info:
        load_config(config, {})
    assert "TCP listener needs trusted issuers" in str(info.value)


def _keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation)
    return keys


def test_the_reference_config_is_valid_and_documents_every_key():
    text = (REPO / "examples" / "site.yaml").read_text()
    load_config(REPO / "examples" / "site.yaml", {})
    for key in _keys(SiteConfig):
        assert f"{key}:" in text, f"examples/site.yaml does not document {key}"


def test_the_htcondor_example_is_valid():
    config = load_config(REPO / "examples" / "htcondor-site.yaml", {})
    assert (config.backend, config.htcondor.shared_filesystem) == ("htcondor", True)


def test_slurmrestd_is_refused_for_htcondor(tmp_path):
    text = (REPO / "examples" / "htcondor-site.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "transport: {kind: slurmrestd, slurmrestd: {jwt_key_file: /k}}\n")
    with pytest.raises(ValueError, match="HTCondor runs over local or ssh"):
        load_config(bad, {})


def test_staging_over_ssh_is_refused_with_the_reason(tmp_path):
    raw = yaml.safe_load((REPO / "deploy" / "local" / "sidecar.yaml").read_text())
    assert raw.get("staging"), "the local site stages data"
    raw.pop("agents", None)  # agents are this machine's: over SSH the login node's accounts are used
    raw["transport"] = {
        "kind": "ssh",
        "ssh": {"host": "login", "user": "ilp", "key_file": "/k", "known_hosts": "/h"},
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="staging needs the pods' directories on the sidecar's own filesystem"):
        load_config(bad, {"ILP_SITE_DIR": str(tmp_path)})


def test_the_local_site_config_is_valid():
    config = load_config(REPO / "deploy" / "local" / "sidecar.yaml", {"ILP_SITE_DIR": "/tmp/x"})
    assert config.runtime.default == "sandbox"
    assert yaml.safe_load((REPO / "deploy" / "local" / "sidecar.yaml").read_text())
