"""The image cache against a real registry (issue #19): CNCF Distribution with TLS from its own CA,
started by deploy/local/images.sh on a free port in a private directory, holding the images that
script builds from Debian's busybox-static. Real skopeo, umoci and ch-run; the last runs an
unpacked image as an ordinary account (ilp-bob) in a network namespace with no network at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from interlink_provider.images import command, tools
from interlink_provider.images.cache import ImageCache, PullPolicy
from interlink_provider.images.credentials import basic, parse_dockerconfigjson
from interlink_provider.images.errors import ErrImageNeverPull, ErrImagePull, InvalidImageName
from interlink_provider.images.reference import parse
from tests.helpers import REPO

IMAGES_SCRIPT = REPO / "deploy" / "local" / "images.sh"
# The images these tests use (deploy/local/images.sh builds only these for them).
TEST_IMAGES = {"ILP_REGISTRY_IMAGES": "library/busybox:latest ilp/entrypoint:1"}
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
POD_ACCOUNT = "ilp-bob"


@dataclass
class Registry:
    host: str
    cert_dir: Path
    log: Path
    work: Path

    def mirrors(self) -> dict[str, str]:
        return {"docker.io": self.host}

    def cache(self, root: Path, **kwargs) -> ImageCache:
        return ImageCache(root, mirrors=kwargs.pop("mirrors", self.mirrors()), cert_dir=self.cert_dir, **kwargs)

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def blob_gets(self, repository: str, since: int) -> list[str]:
        """The blobs of `repository` the registry served (200) since a log offset."""
        with self.log.open("rb") as file:
            file.seek(since)
            text = file.read().decode(errors="replace")
        return re.findall(rf'"GET /v2/{re.escape(repository)}/blobs/(sha256:[0-9a-f]+) HTTP/[0-9.]+" 200 ', text)

    def requests(self, since: int) -> int:
        with self.log.open("rb") as file:
            file.seek(since)
            return len(re.findall(rb'" [0-9]{3} [0-9-]+ "', file.read()))

    def manifest(self, repository: str, reference: str) -> tuple[str, dict]:
        """The digest the registry itself announces (Docker-Content-Digest), and the manifest."""
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        request = urllib.request.Request(
            f"https://{self.host}/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            body = response.read()
            return response.headers["Docker-Content-Digest"], json.loads(body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(command_: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(IMAGES_SCRIPT), command_], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def registry():
    """A registry of our own (a free port, a private directory readable by the registry's and the
    pod's accounts, its own CA): the shared site is never touched, and its log is ours to count."""
    work = Path(tempfile.mkdtemp(prefix="ilp-images-", dir="/tmp"))
    os.chmod(work, 0o755)
    port = _free_port()
    env = {**os.environ, **TEST_IMAGES, "ILP_SITE_DIR": str(work / "site"), "ILP_REGISTRY_PORT": str(port)}
    try:
        started = _script("start", env)
        if started.returncode != 0:
            pytest.fail(f"the registry did not start:\n{started.stderr}")
        reg_dir = work / "site" / "registry"
        yield Registry(f"127.0.0.1:{port}", reg_dir / "certs", reg_dir / "registry.log", work)
    finally:
        _script("stop", env)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def cache_root(registry, request) -> Path:
    root = registry.work / "caches" / request.node.name
    root.parent.mkdir(exist_ok=True)
    os.chmod(root.parent, 0o755)
    return root


def test_images_script_is_idempotent_and_reproducible(registry):
    """A second start builds nothing (the tags are there) and the digests are those of a fixed
    timestamp build: the same on every site."""
    env = {
        **os.environ,
        **TEST_IMAGES,
        "ILP_SITE_DIR": str(registry.work / "site"),
        "ILP_REGISTRY_PORT": registry.host.rsplit(":", 1)[1],
    }
    before = registry.log_offset()
    again = _script("start", env)
    assert again.returncode == 0, again.stderr
    assert "library/busybox:latest present" in again.stderr
    assert "ilp/entrypoint:1 present" in again.stderr
    assert "pushed" not in again.stderr
    assert not re.search(rb'"(PUT|POST|PATCH) ', registry.log.read_bytes()[before:])
    digest, manifest = registry.manifest("library/busybox", "latest")
    assert manifest["schemaVersion"] == 2 and len(manifest["layers"]) == 1
    # built again elsewhere (another directory, port and CA, a second later): the same digests
    time.sleep(1)
    other = registry.work / "other"
    other_env = {**os.environ, **TEST_IMAGES, "ILP_SITE_DIR": str(other), "ILP_REGISTRY_PORT": str(_free_port())}
    try:
        built = _script("start", other_env)
        assert built.returncode == 0, built.stderr
        pushed = dict(re.findall(r"pushed 127\.0\.0\.1:[0-9]+/(\S+) \((sha256:[0-9a-f]{64})\)", built.stderr))
    finally:
        _script("stop", other_env)
    assert pushed == {
        "library/busybox:latest": digest,
        "ilp/entrypoint:1": registry.manifest("ilp/entrypoint", "1")[0],
    }


async def test_resolves_names_to_the_registry_digest(registry, cache_root):
    cache = registry.cache(cache_root)
    announced, _ = registry.manifest("library/busybox", "latest")
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox", "index.docker.io/library/busybox:latest"):
        assert await cache.resolve(parse(name)) == announced
    entry, _ = registry.manifest("ilp/entrypoint", "1")
    assert entry != announced
    assert await cache.resolve(parse("ilp/entrypoint:1")) == entry


async def test_five_concurrent_pods_of_one_image_pull_it_once(registry, cache_root):
    cache = registry.cache(cache_root)
    digest, manifest = registry.manifest("library/busybox", "latest")
    blobs = sorted([manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]])
    since = registry.log_offset()
    images = await asyncio.gather(*(cache.ensure("busybox", PullPolicy.IF_NOT_PRESENT) for _ in range(5)))
    assert {image.digest for image in images} == {digest}
    assert [image.pulled for image in images].count(True) == 1
    assert cache.stats.pulls == 1
    assert sorted(registry.blob_gets("library/busybox", since)) == blobs  # each blob fetched once
    rootfs = images[0].rootfs
    assert os.path.samefile(rootfs / "bin" / "sh", rootfs / "bin" / "busybox")
    assert images[0].config.cmd == ("sh",)
    assert images[0].size > 1_000_000
    # nothing of the shared image is writable by another account (the layer's /tmp is 1777)
    assert (rootfs / "tmp").is_dir()
    for path in [rootfs, *rootfs.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            assert not mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID), path
    # and a sixth, later: from the cache, nothing fetched
    since = registry.log_offset()
    again = await cache.ensure("docker.io/library/busybox:latest", PullPolicy.IF_NOT_PRESENT)
    assert not again.pulled and again.path == images[0].path
    assert registry.requests(since) == 0


def test_processes_sharing_a_cache_pull_once(registry, cache_root):
    """Three sidecar processes on one cache directory: the digest's lock file makes one pull."""
    program = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from interlink_provider.images.cache import ImageCache\n"
        "cache = ImageCache(Path(sys.argv[1]), mirrors={'docker.io': sys.argv[2]}, cert_dir=Path(sys.argv[3]))\n"
        "image = asyncio.run(cache.ensure('ilp/entrypoint:1'))\n"
        "print(image.digest, image.pulled)\n"
    )
    _, manifest = registry.manifest("ilp/entrypoint", "1")
    since = registry.log_offset()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", program, str(cache_root), registry.host, str(registry.cert_dir)]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    lines = [out.split() for out, _ in outputs]
    assert len({digest for digest, _ in lines}) == 1
    assert [pulled for _, pulled in lines].count("True") == 1
    assert len(registry.blob_gets("ilp/entrypoint", since)) == 1 + len(manifest["layers"])


async def test_if_not_present_is_served_offline_always_is_not(registry, cache_root):
    online = registry.cache(cache_root)
    first = await online.ensure("ilp/entrypoint:1", PullPolicy.IF_NOT_PRESENT)
    assert first.pulled
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there: the registry is unreachable
    offline = registry.cache(cache_root, mirrors={"docker.io": dead})
    again = await offline.ensure("ilp/entrypoint:1", PullPolicy.IF_NOT_PRESENT)
    assert (again.digest, again.pulled, again.path) == (first.digest, False, first.path)
    assert offline.stats.resolves == 0
    # by digest, even Always is served from the cache without asking: the content cannot differ
    pinned = await offline.ensure(f"ilp/entrypoint@{first.digest}", PullPolicy.ALWAYS)
    assert pinned.path == first.path
    with pytest.raises(ErrImagePull) as refused:
        await offline.ensure("ilp/entrypoint:1", PullPolicy.ALWAYS)
    assert refused.value.reason == "ErrImagePull"
    assert "connection refused" in refused.value.message
    # `:latest` defaults to Always (Kubernetes' defaulting), which needs the registry
    with pytest.raises(ErrImagePull):
        await offline.ensure("busybox")


async def test_never_uses_only_the_cache(registry, cache_root):
    cache = registry.cache(cache_root)
    since = registry.log_offset()
    with pytest.raises(ErrImageNeverPull) as refused:
        await cache.ensure("ilp/entrypoint:1", "Never")
    assert refused.value.reason == "ErrImageNeverPull"
    assert "is not present with pull policy of Never" in refused.value.message
    assert registry.requests(since) == 0
    await cache.ensure("ilp/entrypoint:1", "IfNotPresent")
    since = registry.log_offset()
    image = await cache.ensure("ilp/entrypoint:1", "Never")
    assert not image.pulled and image.config.working_dir == "/work"
    assert registry.requests(since) == 0


async def test_unknown_image_is_err_image_pull_with_the_registry_reason(registry, cache_root):
    cache = registry.cache(cache_root)
    with pytest.raises(ErrImagePull) as refused:
        await cache.ensure("ilp/no-such-image:1")
    assert refused.value.reason == "ErrImagePull"
    assert "manifest unknown" in refused.value.message
    assert "ilp/no-such-image" in refused.value.message
    with pytest.raises(ErrImagePull) as refused:
        await cache.ensure("busybox:no-such-tag")
    assert "manifest unknown" in refused.value.message
    assert not list((cache_root / "images").iterdir())


async def test_bad_reference_is_invalid_image_name_and_asks_no_registry(registry, cache_root):
    cache = registry.cache(cache_root)
    since = registry.log_offset()
    for bad in ("Busybox", "busybox:bad tag", "busybox@sha256:1234", "", "registry:5000/", "a//b"):
        with pytest.raises(InvalidImageName) as refused:
            await cache.ensure(bad, "IfNotPresent")
        assert refused.value.reason == "InvalidImageName"
    assert registry.requests(since) == 0


async def test_lru_eviction_keeps_images_in_use(registry, cache_root):
    cache = registry.cache(cache_root)
    busybox = await cache.ensure("busybox", "IfNotPresent")
    await asyncio.sleep(0.05)
    entry = await cache.ensure("ilp/entrypoint:1", "IfNotPresent")
    assert [e.digest for e in cache.entries()] == [busybox.digest, entry.digest]  # least recent first
    assert cache.size() == busybox.size + entry.size
    # nothing to do under the limit
    assert await cache.evict(busybox.size + entry.size, in_use=set()) == []
    # over it: the least recently used goes, unless a live pod uses it
    assert await cache.evict(entry.size, in_use={busybox.digest}) == [entry.digest]
    assert not entry.path.exists() and busybox.path.exists()
    # the evicted image comes back by pulling again; then busybox is the least recently used
    back = await cache.ensure("ilp/entrypoint:1", "IfNotPresent")
    assert back.pulled
    assert await cache.evict(back.size, in_use=set()) == [busybox.digest]
    assert [e.digest for e in cache.entries()] == [back.digest]
    assert not list((cache_root / "tmp").iterdir())  # no half-removed image left


def _ch_run(image, process: command.Process) -> subprocess.CompletedProcess[str]:
    """ch-run as the pod's account, its environment exactly the process's, in a network namespace
    of its own (only a loopback that is down): the image must need no network to run."""
    env_flags = [f"--set-env={name}={value}" for name, value in sorted(process.env.items())]
    argv = [
        "unshare",
        "--net",
        "setpriv",
        f"--reuid={POD_ACCOUNT}",
        f"--regid={POD_ACCOUNT}",
        "--clear-groups",
        "env",
        "-i",
        f"USER={POD_ACCOUNT}",
        "PATH=/usr/bin:/bin",
        "ch-run",
        "--unset-env=*",
        *env_flags,
        "--env-no-expand",
        "-c",
        process.cwd,
        str(image.rootfs),
        "--",
        *process.argv,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")


async def test_unpacked_image_runs_with_ch_run_as_a_pod_account_offline(registry, cache_root):
    cache = registry.cache(cache_root)
    started = time.monotonic()
    image = await cache.ensure("ilp/entrypoint:1", "IfNotPresent")
    assert time.monotonic() - started < 60
    assert image.config.entrypoint == ("/bin/echo", "from-entrypoint")
    # the image's own process: ENTRYPOINT + CMD
    ran = _ch_run(image, command.process(image.config))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "from-entrypoint default-arg\n"
    # args only: ENTRYPOINT + args
    ran = _ch_run(image, command.process(image.config, args=["pod-arg"]))
    assert ran.stdout == "from-entrypoint pod-arg\n", ran.stderr
    # a command: the image's Env and WorkingDir, as the pod's account, with no network
    probe = 'echo "$GREETING|$(pwd)|$(id -u)|$PATH"; echo $(tail -n +3 /proc/net/dev | cut -d: -f1)'
    ran = _ch_run(image, command.process(image.config, command=["/bin/sh", "-c", probe]))
    assert ran.returncode == 0, ran.stderr
    first, second = ran.stdout.splitlines()[:2]
    uid = subprocess.run(["id", "-u", POD_ACCOUNT], capture_output=True, text=True, check=True).stdout.strip()
    assert first == f"image|/work|{uid}|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert second.split() == ["lo"]  # no interface but a loopback, which is down
    # the pod's env over the image's, the pod's workingDir over the image's
    process = command.process(
        image.config, ["/bin/sh", "-c", 'echo "$GREETING $(pwd)"'], env={"GREETING": "pod"}, workdir="/tmp"
    )
    ran = _ch_run(image, process)
    assert ran.stdout == "pod /tmp\n", ran.stderr
    # the image's files are the account's to read, not to change
    ran = _ch_run(image, command.process(image.config, ["/bin/sh", "-c", "touch /bin/x 2>/dev/null || echo read-only"]))
    assert ran.stdout == "read-only\n", ran.stderr


def test_cache_layout_is_content_addressed(registry, cache_root):
    cache = registry.cache(cache_root)
    image = asyncio.run(cache.ensure("ilp/entrypoint:1", "IfNotPresent"))
    assert image.path.name == image.digest.replace(":", "-")
    blob = (image.path / "image.json").read_bytes()
    _, manifest = registry.manifest("ilp/entrypoint", "1")
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == manifest["config"]["digest"]
    index = json.loads((cache_root / "index.json").read_text())
    assert index == {"docker.io/ilp/entrypoint:1": image.digest}


PRIVATE_USER, PRIVATE_PASSWORD = "robot", "s3cret-Pa55word"


@pytest.fixture(scope="module")
def private_registry(registry):
    """A second registry that requires a user name and password (htpasswd, bcrypt), with the same
    images: what a pod's imagePullSecrets are for."""
    work = registry.work / "private"
    work.mkdir()
    os.chmod(work, 0o755)
    hashed = subprocess.run(
        [
            "python3",
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            PRIVATE_PASSWORD,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hashed.startswith("$2")
    (work / "htpasswd").write_text(f"{PRIVATE_USER}:{hashed}\n")
    port = _free_port()
    host = f"127.0.0.1:{port}"
    (work / "auth.json").write_text(json.dumps({"auths": {host: basic(PRIVATE_USER, PRIVATE_PASSWORD)}}))
    os.chmod(work / "auth.json", 0o600)
    env = {
        **os.environ,
        **TEST_IMAGES,
        "ILP_SITE_DIR": str(work / "site"),
        "ILP_REGISTRY_PORT": str(port),
        "ILP_REGISTRY_HTPASSWD": str(work / "htpasswd"),
        "ILP_REGISTRY_AUTHFILE": str(work / "auth.json"),
    }
    try:
        started = _script("start", env)
        if started.returncode != 0:
            pytest.fail(f"the private registry did not start:\n{started.stderr}")
        assert "pushed" in started.stderr
        yield Registry(host, work / "site" / "registry" / "certs", work / "site" / "registry" / "registry.log", work)
    finally:
        _script("stop", env)


async def test_private_registry_needs_the_pods_pull_secret(private_registry, cache_root, monkeypatch):
    seen: list[list[str]] = []
    real_run = tools.run

    async def recording_run(argv, **kwargs):
        seen.append(list(argv))
        return await real_run(argv, **kwargs)

    monkeypatch.setattr(tools, "run", recording_run)
    cache = private_registry.cache(cache_root, mirrors={})
    image = f"{private_registry.host}/ilp/entrypoint:1"
    # the right credentials in the file skopeo reads by default (a login of the sidecar's account)
    # are not borrowed for a pod without a pull secret
    ambient = Path(f"/run/containers/{os.getuid()}/auth.json")
    kept = ambient.read_bytes() if ambient.exists() else None
    ambient.parent.mkdir(parents=True, exist_ok=True)
    ambient.write_text(json.dumps({"auths": {private_registry.host: basic(PRIVATE_USER, PRIVATE_PASSWORD)}}))
    try:
        with pytest.raises(ErrImagePull) as refused:
            await cache.ensure(image, "IfNotPresent")
    finally:
        if kept is None:
            ambient.unlink()
        else:
            ambient.write_bytes(kept)
    assert "authentication required" in refused.value.message or "unauthorized" in refused.value.message
    wrong = parse_dockerconfigjson(
        json.dumps({"auths": {private_registry.host: {"username": PRIVATE_USER, "password": "wrong"}}})
    )
    with pytest.raises(ErrImagePull) as refused:
        await cache.ensure(image, "IfNotPresent", secrets=[wrong])
    assert "unauthorized" in refused.value.message or "authentication required" in refused.value.message
    secret = parse_dockerconfigjson(
        json.dumps(
            {
                "auths": {
                    f"https://{private_registry.host}/v2/": {"username": PRIVATE_USER, "password": PRIVATE_PASSWORD}
                }
            }
        )
    )
    pulled = await cache.ensure(image, "IfNotPresent", secrets=[{}, secret])
    assert pulled.pulled and pulled.config.entrypoint == ("/bin/echo", "from-entrypoint")
    # the secret never was on a command line, and no copy of it is left behind
    encoded = secret[private_registry.host]["auth"]
    assert seen and not any(PRIVATE_PASSWORD in arg or encoded in arg for argv in seen for arg in argv)
    assert any("--authfile" in argv for argv in seen) and any("--src-authfile" in argv for argv in seen)
    leftovers = [p for p in (cache_root / "home").rglob("*") if p.name != "policy.json"]
    assert leftovers == []
    # Always checks the credentials again, even with the image in the cache
    with pytest.raises(ErrImagePull):
        await cache.ensure(image, "Always", secrets=[wrong])
    assert (await cache.ensure(image, "Always", secrets=[secret])).path == pulled.path
    # through a mirror, only credentials for the mirror itself are sent, never the named registry's
    mirrored = private_registry.cache(cache_root / "mirrored", mirrors={"docker.io": private_registry.host})
    for_docker_io = parse_dockerconfigjson(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"username": PRIVATE_USER, "password": PRIVATE_PASSWORD}}})
    )
    with pytest.raises(ErrImagePull) as refused:
        await mirrored.ensure("ilp/entrypoint:1", "IfNotPresent", secrets=[for_docker_io])
    assert "unauthorized" in refused.value.message or "authentication required" in refused.value.message
    via_mirror = await mirrored.ensure("ilp/entrypoint:1", "IfNotPresent", secrets=[secret])
    assert via_mirror.digest == pulled.digest and via_mirror.pulled


async def test_leftovers_of_a_dead_pull_are_swept_a_live_one_is_not(registry, cache_root):
    cache = registry.cache(cache_root)
    image = await cache.ensure("ilp/entrypoint:1", "IfNotPresent")
    dead_digest = "sha256:" + "d" * 64
    live_digest = "sha256:" + "e" * 64
    dead = cache_root / "tmp" / f"pull-{dead_digest.replace(':', '-')}.abc123"
    live = cache_root / "tmp" / f"pull-{live_digest.replace(':', '-')}.def456"
    evicting = cache_root / "tmp" / "evict-xyz"
    for path in (dead, live, evicting / "image"):
        (path / "rootfs" / "bin").mkdir(parents=True)
        (path / "rootfs" / "bin" / "sh").write_text("x")
        os.chmod(path / "rootfs" / "bin", 0o555)  # as a rootless unpack leaves some directories
    held = cache._try_lock(live_digest.replace(":", "-"))  # a pull of that digest under way
    assert held is not None
    try:
        again = registry.cache(cache_root)  # a sidecar restarting on the same cache
        assert not dead.exists() and not evicting.exists()
        assert live.exists()
    finally:
        os.close(held)
    assert again.sweep() == [live.name]
    assert not list((cache_root / "tmp").iterdir())
    assert (await again.ensure("ilp/entrypoint:1", "Never")).path == image.path
