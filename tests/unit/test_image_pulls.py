"""The pull phase and the charliecloud runtime's pieces, without a registry: the service core with
in-memory test doubles of the backend and the site's files, and `ScriptedCache`, a test double of
the image cache whose answers each test scripts (the real cache is tested against a real registry
in tests/integration/test_images.py and test_charliecloud.py)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from interlink_provider.images import pins
from interlink_provider.images.cache import CachedImage, ImageCache
from interlink_provider.images.config import ImageConfig
from interlink_provider.images.errors import CreateContainerError, ErrImagePull, InvalidImageName
from interlink_provider.images.reference import parse
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.runtimes import Bind, LaunchContext
from interlink_provider.runtimes.charliecloud import CharliecloudConfig, CharliecloudRuntime
from sidecars.core.domain import images as image_phase
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import PodSummary, Stage
from sidecars.core.domain.service import SiteService, summary_of
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits.backend import Submission
from sidecars.core.kits.script import RenderOptions
from tests.doubles import InMemoryBackend, InMemoryFiles
from tests.helpers import wait_for
from tests.podkit import pod, render

ALICE = Principal("alice@idp", account="alice")
DIGEST = "sha256:" + "ab" * 32


class ScriptedCache(ImageCache):
    """Test double of the image cache: `answers[image]` is a list of results, taken in turn (an
    exception is raised); the last one repeats. Nothing is downloaded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.answers: dict[str, list[Any]] = {}
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None  # set: ensure() waits for it

    async def ensure(self, image: str, policy: Any = None, secrets: Any = ()) -> CachedImage:
        self.asked.append(image)
        if self.gate is not None:
            await self.gate.wait()
        answers = self.answers.get(image) or [image_of(image)]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def image_of(image: str, config: ImageConfig | None = None, digest: str = DIGEST) -> CachedImage:
    path = Path("/cache/images") / digest.replace(":", "-")
    return CachedImage(parse(image), digest, path, config or ImageConfig(cmd=("sh",)), 1, pulled=True)


def request(image: str = "busybox", policy: str = "") -> RetrievedPodData:
    container: dict[str, Any] = {"name": "c", "image": image, "command": ["true"]}
    if policy:
        container["imagePullPolicy"] = policy
    spec = {"restartPolicy": "Never", "containers": [container]}
    meta = {"name": "p", "namespace": "ns", "uid": str(uuid.uuid4()), "annotations": {}}
    return RetrievedPodData.model_validate({"pod": {"metadata": meta, "spec": spec}, "container": []})


def settings_in(tmp_path: Path, wait: float = 2) -> ServiceSettings:
    """A site whose default runtime is charliecloud, its image cache in tmp_path/cache."""
    return ServiceSettings(
        state_dir=str(tmp_path / "state"),
        pods_root=str(tmp_path / "pods"),
        runtime={"default": "charliecloud"},
        images={"cache_dir": str(tmp_path / "cache")},
        create_wait_seconds=wait,
    )


@pytest.fixture
async def site(tmp_path) -> AsyncIterator[tuple[SiteService, InMemoryBackend, ScriptedCache]]:
    settings = settings_in(tmp_path)
    backend, cache = InMemoryBackend(), ScriptedCache(tmp_path / "cache")
    service = SiteService(
        settings, backend, Store(tmp_path / "state" / "db.sqlite"), files=InMemoryFiles(), images=cache
    )
    await service.load()
    yield service, backend, cache
    await service.stop()
    await service.book.store.close()


def reasons(service: SiteService, uid: str) -> list[str]:
    record = service.record(uid)
    assert record is not None
    return [c["state"].get("waiting", {}).get("reason", "") for c in record.status.all()]


async def test_a_pod_is_pinned_then_submitted(site):
    service, backend, cache = site
    created = await service.create(request(policy="IfNotPresent"), ALICE)
    await wait_for(lambda: _async(bool(backend.called("submit"))), 5, interval=0.05, what="submitted")
    record = service.record(created.uid)
    assert record is not None and record.stage == Stage.SUBMITTED
    assert record.summary.containers[0].pull_policy == "IfNotPresent"
    pin = cache.root / "pins" / created.uid / "c.sh"
    assert "ILP_IMAGE_ROOTFS=/cache/images/sha256-abab" in pin.read_text()
    assert pin.stat().st_mode & 0o777 == 0o644
    assert service.images is not None and service.images.pins.in_use() == {DIGEST}
    assert record.summary.containers[0].image_id == f"docker.io/library/busybox@{DIGEST}"
    [status] = service.statuses([created.uid], ALICE)
    assert status["containers"][0]["imageID"] == f"docker.io/library/busybox@{DIGEST}"


async def test_above_the_size_limit_only_images_no_live_pod_runs_are_evicted(tmp_path):
    settings = settings_in(tmp_path)
    settings.images.size_limit_gib = 1.0  # type: ignore[union-attr]
    backend, cache = InMemoryBackend(), ScriptedCache(tmp_path / "cache")
    evictions: list[tuple[int, set[str]]] = []

    async def evict(limit: int, in_use: Any) -> list[str]:
        evictions.append((limit, set(in_use)))
        return []

    cache.evict = evict  # type: ignore[method-assign]
    service = SiteService(settings, backend, Store(tmp_path / "db.sqlite"), files=InMemoryFiles(), images=cache)
    await service.load()
    try:
        other = "sha256:" + "cd" * 32
        cache.answers["other"] = [image_of("other", digest=other)]
        first = await service.create(request(), ALICE)
        await wait_for(lambda: _async(len(evictions) == 1), 5, 0.02, "first eviction check")
        assert evictions[0] == (2**30, {DIGEST})
        record = service.record(first.uid)
        assert record is not None
        # Its job ended (once submitted: the submitter's own saves would undo an earlier end), so
        # its pin may go.
        await wait_for(lambda: _async(_stage(service, first.uid) == Stage.SUBMITTED), 5, 0.02, "submitted")
        async with service.book.lock(first.uid):
            await service.book.save(first.uid, stage=Stage.FINISHED)
        await service.create(request("other"), ALICE)
        await wait_for(lambda: _async(len(evictions) == 2), 5, 0.02, "second eviction check")
        assert evictions[1] == (2**30, {other})
        assert not (cache.root / "pins" / first.uid).exists()
    finally:
        await service.stop()
        await service.book.store.close()


async def test_a_failed_pull_backs_off_and_is_retried(site, monkeypatch):
    service, backend, cache = site
    monkeypatch.setattr(image_phase, "ERR_IMAGE_PULL_SHOWN", 0.2)
    assert service.images is not None
    service.images.backoff.initial = 0.6
    cache.answers["busybox"] = [ErrImagePull("busybox", "connection refused"), image_of("busybox")]
    created = await service.create(request(), ALICE)
    await wait_for(lambda: _async(reasons(service, created.uid) == ["ErrImagePull"]), 5, 0.02, "ErrImagePull")
    await wait_for(lambda: _async(reasons(service, created.uid) == ["ImagePullBackOff"]), 5, 0.02, "back-off")
    record = service.record(created.uid)
    assert record is not None
    assert "connection refused" in record.status.apps[0]["state"]["waiting"]["message"]
    assert not backend.called("submit")
    await wait_for(lambda: _async(bool(backend.called("submit"))), 5, 0.05, "submitted after the retry")
    assert cache.asked == ["busybox", "busybox"]


async def test_an_invalid_name_is_not_retried_and_delete_stops_a_pull(site):
    service, backend, cache = site
    cache.answers["bad"] = [InvalidImageName("bad", "invalid reference format")]
    created = await service.create(request("bad"), ALICE)
    await wait_for(lambda: _async(reasons(service, created.uid) == ["InvalidImageName"]), 5, 0.02, "invalid")
    await asyncio.sleep(0.3)
    assert cache.asked == ["bad"]
    cache.gate = asyncio.Event()  # the next pull hangs until deleted
    second = await service.create(request(), ALICE)
    await wait_for(lambda: _async("busybox" in cache.asked), 5, 0.02, "pulling")
    assert await service.delete(second.uid, ALICE) == "pull stopped"
    record = service.record(second.uid)
    assert record is not None and record.stage == Stage.DELETED
    cache.gate.set()
    await asyncio.sleep(0.1)
    assert not backend.called("submit")
    assert not (cache.root / "pins" / second.uid).exists()


async def test_a_restarted_sidecar_pulls_again(tmp_path):
    settings = settings_in(tmp_path, wait=0)
    backend, files, cache = InMemoryBackend(), InMemoryFiles(), ScriptedCache(tmp_path / "cache")
    cache.gate = asyncio.Event()
    first = SiteService(settings, backend, Store(tmp_path / "state" / "db.sqlite"), files=files, images=cache)
    await first.load()
    created = await first.create(request(), ALICE)
    await first.stop()  # killed mid-pull: the record stays in PULLING
    await first.book.store.close()
    cache = ScriptedCache(tmp_path / "cache")
    second = SiteService(settings, backend, Store(tmp_path / "state" / "db.sqlite"), files=files, images=cache)
    await second.load()
    try:
        await wait_for(lambda: _async(bool(backend.called("submit"))), 5, 0.05, "submitted after the restart")
        assert backend.called("submit") == [(f"ilp-{created.uid}", "alice")]
    finally:
        await second.stop()
        await second.book.store.close()


async def _async(value: bool) -> bool:
    return value


# ------------------------------------------------------------------ pins


def source(pin_file: Path, *names: str) -> list[str]:
    """What bash makes of a pin: each array's words on a line of its own, NUL-separated."""
    script = f"source {pin_file}; " + "; ".join(f'printf "%s\\0" "${{{n}[@]}}"; echo' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_a_pin_reaches_bash_literally(tmp_path):
    tricky = "$(touch /tmp/ilp-pwned) 'q' \"d\" \\ `x` ;\nnext"
    config = ImageConfig(entrypoint=("/bin/echo", tricky), cmd=("a b",), env=(f"X={tricky}",), working_dir="/w d")
    written = pins.Pins(tmp_path).write("uid-1", "c", image_of("busybox", config))
    words = source(Path(written), "ILP_IMAGE_ENTRYPOINT", "ILP_IMAGE_CMD", "ILP_IMAGE_ENV", "ILP_IMAGE_WORKDIR")
    text = "\n".join(words)
    assert "/bin/echo\0" + tricky in text and "a b\0" in text and f"X={tricky}\0" in text and "/w d\0" in text
    assert not Path("/tmp/ilp-pwned").exists()


def test_pins_name_only_live_pods_and_refuse_odd_names(tmp_path):
    store = pins.Pins(tmp_path)
    store.write("u1", "c", image_of("busybox"))
    store.write("u2", "c", image_of("busybox", digest="sha256:" + "cd" * 32))
    assert store.in_use() == {DIGEST, "sha256:" + "cd" * 32}
    assert store.keep_only({"u1"}) == ["u2"]
    assert store.in_use() == {DIGEST}
    store.remove("u1")
    assert store.in_use() == set()
    for uid, name in (("../x", "c"), ("u", "../c"), ("u", "C"), (".hidden", "c")):
        with pytest.raises(ValueError):
            store.write(uid, name, image_of("busybox"))


def test_the_image_user_is_resolved_in_the_image_s_own_files(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nstaff:x:50:\n")
    assert pins.user_ids(ImageConfig(), tmp_path) == (0, 0)
    assert pins.user_ids(ImageConfig(user="app"), tmp_path) == (1000, 1001)
    assert pins.user_ids(ImageConfig(user="app:staff"), tmp_path) == (1000, 50)
    assert pins.user_ids(ImageConfig(user="1000"), tmp_path) == (1000, 1001)
    assert pins.user_ids(ImageConfig(user="4242:7"), tmp_path) == (4242, 7)
    with pytest.raises(CreateContainerError, match="ghost"):
        pins.user_ids(ImageConfig(user="ghost"), tmp_path)


# ------------------------------------------------------------------ the runtime and the pod model


def test_the_runtime_needs_the_cache_and_renders_kubernetes_three_cases():
    runtime = CharliecloudRuntime(CharliecloudConfig(gpu_devices=["/dev/g*"], fuse_overlayfs=""))
    ctx = LaunchContext(
        pod_dir="/p", rootfs="/p/r", binds=(Bind("/p/v", "/data", read_only=True),), image_pin="/c/x.sh"
    )
    base = {"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}
    cases = {"command": {"command": ["sh"], "args": ["-c", "x"]}, "args": {"args": ["y"]}, "image": {}}
    for mode, extra in cases.items():
        spec, _, _ = render(pod([{**base, **extra}]), "/pods", runtime="charliecloud", options=_options())
        launch = runtime.launch(spec.containers[0], ctx)
        assert launch.run[:4] == ("ilp_charliecloud", "/c/x.sh", mode, "")
        assert launch.run[4:10] == ("--ro-bind", "/p/v", "/data", "--mask", "/dev/g*", "--")  # no GPUs asked
        env = tuple(f"{name}={value}" for name, value in spec.containers[0].env)
        assert "A=1" in env
        assert launch.run[10 : 11 + len(env)] == (*env, "--")
        assert list(launch.run[11 + len(env) :]) == {"command": ["sh", "-c", "x"], "args": ["y"], "image": []}[mode]
        assert launch.exec_prefix == ("ilp_charliecloud_exec", "/c/x.sh", *env, "--")
        assert launch.prepare == (("ilp_pinned", "/c/x.sh"),)
    gpu = {**base, "resources": {"limits": {"nvidia.com/gpu": 1}}}
    spec, _, _ = render(pod([gpu]), "/pods", runtime="charliecloud", options=_options())
    assert "--mask" not in runtime.launch(spec.containers[0], ctx).run  # its GPUs are Slurm's to give
    # by default the writable layer is fuse-overlayfs's (the image's files are the container's)
    assert CharliecloudRuntime().launch(spec.containers[0], ctx).run[4:6] == ("--fuse", "fuse-overlayfs")
    spec, _, _ = render(pod([base]), "/pods", runtime="charliecloud", options=_options())
    with pytest.raises(PodRejected, match="image cache"):
        runtime.launch(spec.containers[0], LaunchContext(pod_dir="/p", rootfs="/p/r", binds=()))


def test_pull_policies_are_checked_and_kept():
    with pytest.raises(PodRejected, match="imagePullPolicy"):
        render(pod([{"name": "c", "image": "busybox", "command": ["x"], "imagePullPolicy": "Sometimes"}]), "/pods")
    spec, _, _ = render(
        pod([{"name": "c", "image": "busybox", "command": ["x"], "imagePullPolicy": "Never"}]),
        "/pods",
        runtime="charliecloud",
        options=_options(),
    )
    assert spec.containers[0].pull_policy == "Never"
    summary = summary_of(spec, CharliecloudRuntime(), _submission())
    assert PodSummary.from_json(summary.to_json()).containers[0].pull_policy == "Never"


def _options() -> RenderOptions:
    return RenderOptions(image_cache="/cache")


def _submission() -> Submission:
    return Submission(script="")


def _stage(service: SiteService, uid: str) -> Stage | None:
    record = service.record(uid)
    return record.stage if record is not None else None
