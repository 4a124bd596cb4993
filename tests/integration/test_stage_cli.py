"""`interlink-provider stage ...` against the real local Rucio and XRootD servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from interlink_provider.staging.refs import adler32_of
from tests.datalake import (
    RSE,
    RUCIO_HOST,
    SLOW_RSE,
    corrupt,
    put_dataset,
    xrd_disk_path,
)
from tests.helpers import REPO, site_dir

pytestmark = pytest.mark.slurm
SITE_CONFIG = str(REPO / "deploy" / "local" / "sidecar.yaml")


def stage_command(*args: str, config: bool = True) -> tuple[list[str], dict[str, str]]:
    command = [
        sys.executable,
        "-m",
        "interlink_provider.cli.main",
        "stage",
        *args,
        "--connection-window",
        "2",
        "--retries",
        "0",
    ]
    if config:
        command += ["--config", SITE_CONFIG]
    return command, {**os.environ, "ILP_SITE_DIR": str(site_dir()), "COLUMNS": "200"}


def stage(*args: str, config: bool = True) -> subprocess.CompletedProcess[str]:
    command, env = stage_command(*args, config=config)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_resolve_lists_files_checksums_and_the_local_replica_first(local_site, catalog):
    contents = {"one.dat": os.urandom(2_000), "two.dat": os.urandom(30_000)}
    did, _ = put_dataset(catalog, contents, rses=(SLOW_RSE, RSE))
    done = stage("resolve", did, "--json")
    assert done.returncode == 0, done.stderr
    files = {f["did"].rsplit("/", 1)[-1]: f for f in json.loads(done.stdout)}
    assert set(files) == set(contents)
    for name, data in contents.items():
        entry = files[name]
        assert entry["bytes"] == len(data)
        assert {r["rse"] for r in entry["replicas"]} == {RSE, SLOW_RSE}
        assert entry["replicas"][0] == {"rse": RSE, "pfn": entry["chosen"], "local": True}
    table = stage("resolve", did)
    assert table.returncode == 0 and "2 files" in table.stdout and "LOCAL_XRD (local)" in table.stdout


def test_get_downloads_verified_files_and_skips_what_is_present(local_site, catalog, tmp_path):
    contents = {"a.bin": os.urandom(200_000), "b.bin": b"small\n"}
    did, _ = put_dataset(catalog, contents)
    first = stage("get", did, str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == contents
    again = stage("get", did, str(tmp_path / "out"))
    assert again.returncode == 0 and "2 already present and verified" in again.stderr


def test_get_of_a_corrupt_replica_fails_and_leaves_no_file(local_site, catalog, tmp_path):
    did, disks = put_dataset(catalog, {"bad.bin": os.urandom(80_000), "fine.bin": b"ok\n"})
    corrupt(disks["bad.bin"])
    done = stage("get", did, str(tmp_path))
    assert done.returncode == 1
    assert "checksum mismatch" in done.stderr and "bad.bin" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine.bin"]  # no partial, no corrupt file


def test_check_finds_the_corrupt_replica(local_site, catalog):
    did, disks = put_dataset(catalog, {"x.bin": os.urandom(40_000), "y.bin": os.urandom(40_000)})
    healthy = stage("check", did, "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert {c["verdict"] for c in json.loads(healthy.stdout)} == {"ok"}
    corrupt(disks["y.bin"])
    sick = stage("check", did, "--json")
    assert sick.returncode == 1
    verdicts = {c["replica"].split("/")[-1]: c["verdict"] for c in json.loads(sick.stdout)}
    assert verdicts == {f"x.bin @ {RSE}": "ok", f"y.bin @ {RSE}": "checksum mismatch"}


def test_check_of_urls_tells_missing_from_unreachable(local_site):
    missing = stage("check", "root://127.0.0.1:11094//rucio/no/such/file", "--json", config=False)
    assert missing.returncode == 1 and json.loads(missing.stdout)[0]["verdict"] == "missing"
    down = stage("check", "root://127.0.0.1:1//rucio/x", "--json", config=False)
    assert down.returncode == 3 and json.loads(down.stdout)[0]["verdict"] == "unreachable"


def test_put_registers_once_and_refuses_other_content_under_the_same_did(local_site, catalog, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:10]}"
    payload = tmp_path / "result.bin"
    payload.write_bytes(os.urandom(120_000))
    put = stage("put", str(payload), "--rse", RSE, "--did", f"user:{name}.bin", "--dataset", f"user:{name}")
    assert put.returncode == 0, put.stderr
    [replica] = catalog.replicas("user", f"{name}.bin")
    assert replica["adler32"] == adler32_of(payload) and RSE in replica["rses"]
    assert xrd_disk_path(next(iter(replica["pfns"]))).read_bytes() == payload.read_bytes()
    assert [f["name"] for f in catalog.client().list_files("user", name)] == [f"{name}.bin"]
    same = stage("put", str(payload), "--rse", RSE, "--did", f"user:{name}.bin")
    assert same.returncode == 0 and "already registered with the same content" in same.stderr
    payload.write_bytes(b"different")
    other = stage("put", str(payload), "--rse", RSE, "--did", f"user:{name}.bin")
    assert other.returncode == 1 and "immutable" in other.stderr


def test_bench_writes_reads_and_cleans_up(local_site):
    before = set((site_dir() / "xrd" / "data" / "rucio").glob("ilp-bench-*"))
    done = stage("bench", "root://127.0.0.1:11094//rucio/", "--write-size", "8M", "--repeat", "2", config=False)
    assert done.returncode == 0, done.stderr
    assert "write: median" in done.stdout and "read: median" in done.stdout
    # two writes, two reads of 8.4 MB each (a throughput such as "18.4 MB/s" must not count)
    assert len(re.findall(r"(?<![\d.])8\.4 MB(?!/s)", done.stdout)) == 4, done.stdout
    assert set((site_dir() / "xrd" / "data" / "rucio").glob("ilp-bench-*")) == before


@pytest.mark.parametrize(
    "args, config, message",
    [
        (("resolve", "no-colon"), True, "is not a Rucio DID"),
        (("get", "http://example.org/file", "/tmp/x"), True, "is not an XRootD URL"),
        (("bench", "demo:input-data"), False, "bench measures an XRootD URL"),
    ],
)
def test_bad_targets_are_usage_errors(local_site, args, config, message):
    done = stage(*args, config=config)
    assert done.returncode == 2 and message in done.stderr


def test_a_did_without_rucio_configured_says_how_to_configure_it(local_site, tmp_path):
    env_less = stage("resolve", "demo:input-data", config=False)
    assert env_less.returncode == 2 and "--rucio-host" in env_less.stderr
    password = tmp_path / "password"
    password.write_text("secret\n")
    flags = stage(
        "resolve",
        "demo:input-data",
        "--json",
        "--rucio-host",
        RUCIO_HOST,
        "--rucio-username",
        "ddmlab",
        "--rucio-password-file",
        str(password),
        config=False,
    )
    assert flags.returncode == 0, flags.stderr
    assert len(json.loads(flags.stdout)) == 3
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    refused = stage(
        "resolve",
        "demo:input-data",
        "--rucio-host",
        RUCIO_HOST,
        "--rucio-username",
        "intruder",
        "--rucio-password-file",
        str(wrong),
        config=False,
    )
    assert refused.returncode == 1 and "refused the login" in refused.stderr and "Traceback" not in refused.stderr


def test_an_interrupted_get_stops_and_leaves_no_partial_file(local_site, tmp_path):
    big = site_dir() / "xrd" / "data" / "rucio" / f"big-{uuid.uuid4().hex[:8]}.bin"
    big.write_bytes(os.urandom(40_000_000))  # ten seconds through the throttled xrootd
    big.chmod(0o644)
    command, env = stage_command(
        "get", f"root://127.0.0.1:11095//rucio/{big.name}", str(tmp_path / "out"), config=False
    )
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not list((tmp_path / "out").glob(".*.part")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((tmp_path / "out").glob(".*.part")), "the download never started"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        big.unlink()
    assert process.returncode == 130 and "interrupted" in stderr
    assert list((tmp_path / "out").iterdir()) == []
