"""Fuzzing the REST plugin API of a real sidecar (hypothesis): random JSON, and valid requests
mutated at random places, at every endpoint. The daemon never answers 5xx to bad input and never
dies. Its jobs go to a partition the real Slurm does not have, so whatever it accepts is refused by
sbatch and nothing generated ever runs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interlink_provider.pods import manifest
from tests.helpers import Sidecar

pytestmark = pytest.mark.slurm
PATHS = ["/create", "/delete", "/status", "/getLogs"]
SEEN: Counter[tuple[str, int]] = Counter()  # (path, status) over every example

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "../../etc/passwd", "$(id)", "`id`", "a;b", "\x00", "-" * 300, "1e999", "nvidia.com/gpu"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzzed(local_site, tmp_path_factory):
    sidecar = Sidecar(
        tmp_path_factory.mktemp("fuzz"), {"slurm": {"partition": "no-such-partition"}, "create_wait_seconds": 0}
    ).start()
    yield sidecar
    sidecar.stop()


def valid_create() -> dict[str, Any]:
    pod = {
        "metadata": {"name": "fuzz", "annotations": {"slurm-job.vk.io/flags": "--time=5"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo hi"],
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="fuzz")


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths_of(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths_of(inner, (*prefix, index))
    return found


@st.composite
def mutated_creates(draw) -> dict[str, Any]:
    body = valid_create()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(body)[1:]))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(json_values)
    return body


async def send(sidecar: Sidecar, path: str, body: bytes) -> tuple[int, str]:
    connector = aiohttp.UnixConnector(path=sidecar.socket)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(
            "POST" if path in ("/create", "/delete") else "GET", f"http://sidecar{path}", data=body
        ) as response:
            return response.status, await response.text()


def check(sidecar: Sidecar, path: str, body: bytes) -> None:
    status, text = asyncio.run(send(sidecar, path, body))
    SEEN[(path, status)] += 1
    assert status < 500, (path, body[:300], status, text[:300])
    assert sidecar.process is not None and sidecar.process.poll() is None, sidecar.log()[-2000:]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=json_values)
def test_random_json_never_gets_a_5xx(fuzzed, path, body):
    check(fuzzed, path, json.dumps(body).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated_creates())
def test_mutated_pods_are_refused_with_a_reason_or_accepted(fuzzed, body):
    check(fuzzed, "/create", json.dumps(body).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_bytes_that_are_not_json_get_a_4xx(fuzzed, raw):
    for path in PATHS:
        check(fuzzed, path, raw)


def test_the_sidecar_survived_and_ran_nothing(fuzzed):
    # The fuzzing reached both sides of validation: pods accepted (then refused by sbatch) and refused.
    assert SEEN[("/create", 200)] > 0 and SEEN[("/create", 422)] > 0 and SEEN[("/create", 400)] > 0, SEEN
    assert asyncio.run(send(fuzzed, "/status", b"[]"))[0] == 200
    assert fuzzed.live_jobs() == []  # every accepted pod was refused by sbatch: nothing queued or running
