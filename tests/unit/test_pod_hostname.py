"""The containers' hostname: spec.hostname or the pod name, cut to 63 characters as the kubelet does."""

from __future__ import annotations

import copy
import shlex

import pytest

from interlink_provider.pods.hostname import pod_hostname
from interlink_provider.pods.policy import TranslationPolicy
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from tests.podkit import pod, render

# 253 characters, the longest pod name, with dots: the 63rd character is a '.'
LONG_NAME = ".".join(["a" * 62, "b" * 63, "c" * 63, "d" * 62])
CUT = "a" * 62


def test_a_short_name_is_the_hostname_as_it_is():
    assert pod_hostname("p") == "p"
    assert pod_hostname("a.b-c") == "a.b-c"
    assert pod_hostname("x" * 63) == "x" * 63


def test_a_long_name_is_cut_to_63_without_trailing_dash_or_dot():
    assert len(LONG_NAME) == 253 and LONG_NAME[62] == "."
    assert pod_hostname(LONG_NAME) == CUT
    assert pod_hostname("x" * 64) == "x" * 63
    assert pod_hostname("x" * 60 + "b-." + "c" * 9) == "x" * 60 + "b"
    assert pod_hostname("x" * 59 + "b----" + "c" * 9) == "x" * 59 + "b"
    assert pod_hostname("x" * 62 + ".y") == "x" * 62
    # only the end of the cut value is trimmed: dashes and dots inside stay
    assert pod_hostname("a.b-" + "c" * 70) == "a.b-" + "c" * 59


def test_spec_hostname_wins_over_the_name():
    assert pod_hostname(LONG_NAME, "my-host") == "my-host"
    assert pod_hostname("p", "h") == "h"


def _spec(name: str, **spec_fields: str):
    p = pod([{"name": "c", "image": "busybox", "command": ["true"]}], name=name, **spec_fields)
    return pod_to_jobspec(RetrievedPodData.model_validate({"pod": copy.deepcopy(p)}), TranslationPolicy())


def test_hostname_variable_and_jobspec_carry_the_cut_value():
    spec = _spec(LONG_NAME)
    assert spec.name == LONG_NAME and spec.hostname == CUT
    assert ("HOSTNAME", CUT) in spec.containers[0].env
    spec = _spec(LONG_NAME, hostname="given")
    assert spec.hostname == "given" and ("HOSTNAME", "given") in spec.containers[0].env


@pytest.mark.parametrize("hostname", ["Upper", "a.b", "x" * 64])
def test_an_invalid_spec_hostname_is_refused(hostname):
    with pytest.raises(PodRejected) as info:
        _spec("p", hostname=hostname)
    assert info.value.field == "spec.hostname"


def test_the_runner_sandbox_gets_the_cut_hostname(tmp_path):
    _, _, script = render(pod([{"name": "c", "image": "busybox", "command": ["true"]}], name=LONG_NAME), str(tmp_path))
    assert f"ILP_POD_HOSTNAME={shlex.quote(CUT)}\n" in script
    assert '--hostname "$ILP_POD_HOSTNAME"' in script and '--hostname "$ILP_POD_NAME"' not in script
