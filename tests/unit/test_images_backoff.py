"""ImagePullBackOff on the kubelet's schedule: 10 s doubling to 300 s, reset by a success or a
long quiet."""

from __future__ import annotations

from interlink_provider.images.backoff import PullBackoff


def test_delays_double_to_the_maximum():
    backoff = PullBackoff()
    now = 1000.0
    delays = []
    for _ in range(8):
        delays.append(backoff.failed("pod-a/busybox", now))
        now += delays[-1]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_reasons_while_waiting_and_after():
    backoff = PullBackoff()
    assert backoff.reason("k", 0.0) is None and backoff.remaining("k", 0.0) == 0
    backoff.failed("k", 100.0)
    assert backoff.reason("k", 100.0) == "ImagePullBackOff"
    assert backoff.remaining("k", 104.0) == 6.0
    assert backoff.reason("k", 110.0) == "ErrImagePull"  # a retry is due
    assert backoff.reason("other", 100.0) is None  # keys are independent
    backoff.succeeded("k")
    assert backoff.reason("k", 100.0) is None
    assert backoff.failed("k", 200.0) == 10  # from the start again


def test_a_long_quiet_resets_the_delay():
    backoff = PullBackoff(initial=1, maximum=4)
    assert [backoff.failed("k", t) for t in (0, 1, 3, 7)] == [1, 2, 4, 4]
    assert backoff.failed("k", 7 + 8.5) == 1  # quiet for more than twice the maximum
