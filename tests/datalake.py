"""Datalake test helpers: datasets written through the real local xrootd and registered in Rucio."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from interlink_provider.staging.catalog import RucioCatalog
from interlink_provider.staging.refs import FileRef, adler32_of
from tests.helpers import site_dir

RSE = "LOCAL_XRD"
SLOW_RSE = "SLOW_XRD"  # the same files behind a throttled xrootd (deploy/local/site.sh)
RUCIO_HOST = "http://127.0.0.1:18081"


def xrd_disk_path(pfn: str) -> Path:
    """Where the local xrootd keeps a file: its data root + the PFN's path."""
    return site_dir() / "xrd" / "data" / pfn.split("//", 2)[2].lstrip("/")


def put_dataset(
    catalog: RucioCatalog, files: dict[str, bytes], scope: str = "user", rses: tuple[str, ...] = (RSE,)
) -> tuple[str, dict[str, Path]]:
    """A new dataset of new files, written through the local xrootd and registered on `rses`
    (LOCAL_XRD and SLOW_XRD share their files); returns (DID, disk paths)."""
    dataset = f"test-{uuid.uuid4().hex[:10]}"
    refs, disks = [], {}
    for name, content in files.items():
        did_name = f"{dataset}/{name}"
        local = Path(f"/tmp/{uuid.uuid4().hex}")
        local.write_bytes(content)
        if {RSE, SLOW_RSE} & set(rses):
            pfn = catalog.pfn(RSE, scope, did_name)
            subprocess.run(["xrdcp", "-s", "-f", str(local), pfn], check=True, timeout=60)
            disks[name] = xrd_disk_path(pfn)
        refs.append(FileRef(scope, did_name, len(content), adler32_of(local)))
        local.unlink()
    for rse in rses:
        catalog.register(rse, refs, (scope, dataset), None)
    return f"{scope}:{dataset}", disks


def corrupt(disk: Path) -> None:
    """Flip one byte of a stored replica, keeping its size: only a checksum can tell.

    The file's mtime moves on by 2 s, as any later write's would: XRootD keeps a file's computed
    checksum with its mtime in whole seconds, so a change within the second of the last checksum
    (what a fast test did) is answered with the old checksum. (Rot that keeps the mtime is seen
    only by reading the data: stage get and stage-in verify what they read.)"""
    data = bytearray(disk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    before = disk.stat()
    disk.write_bytes(bytes(data))
    later = max(before.st_mtime, time.time()) + 2
    os.utime(disk, (later, later))


TOKEN_RSE = "TOKEN_XRD"  # the token-authorized xrootd (TLS + ztn + SciTokens from the site IdP)


def put_token_dataset(catalog: RucioCatalog, files: dict[str, bytes], scope: str = "user") -> str:
    """A new dataset on TOKEN_XRD, written straight into its data directory (owned by the
    server's account, as xrootd would) and registered; returns the DID."""
    dataset = f"test-{uuid.uuid4().hex[:10]}"
    data_root = site_dir() / "xrd" / "token" / "data"
    refs = []
    for name, content in files.items():
        did_name = f"{dataset}/{name}"
        disk = data_root / catalog.pfn(TOKEN_RSE, scope, did_name).split("//", 2)[2].lstrip("/")
        disk.parent.mkdir(parents=True, exist_ok=True)
        disk.write_bytes(content)
        refs.append(FileRef(scope, did_name, len(content), adler32_of(disk)))
    subprocess.run(["chown", "-R", "nobody", str(data_root)], check=True)
    catalog.register(TOKEN_RSE, refs, (scope, dataset), None)
    return f"{scope}:{dataset}"


def token_disk_path(pfn: str) -> Path:
    return site_dir() / "xrd" / "token" / "data" / pfn.split("//", 2)[2].lstrip("/")
