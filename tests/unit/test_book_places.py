"""PodBook counts the places pods hold as records change (Room's max_pods and per-identity
quota read the counts instead of walking every record, finished ones kept for retention
included): the counts must equal a full walk after every kind of change."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from sidecars.core.domain.book import PodBook
from sidecars.core.domain.records import ContainerInfo, PodRecord, PodSummary, Stage
from sidecars.core.domain.store import Store


def record(uid: str, owner: str, stage: Stage = Stage.ACCEPTED) -> PodRecord:
    summary = PodSummary(containers=(ContainerInfo("c", "busybox", False, "Never"),))
    return PodRecord(
        uid=uid, namespace="ns", name=uid, pod_dir=f"/p/{uid}", job_name=uid, stage=stage, summary=summary, owner=owner
    )


def walked(book: PodBook) -> Counter[str]:
    return Counter(r.owner for r in book.all() if not r.stage.terminal)


def assert_counts_match(book: PodBook) -> None:
    expected = walked(book)
    assert book.active() == expected.total()
    for owner in {"alice", "bob", "(rebuilt)", "nobody"}:
        assert book.holding(owner) == expected[owner], owner


async def test_counts_follow_inserts_stage_changes_owner_changes_and_removals(tmp_path):
    book = PodBook(Store(tmp_path / "db"), "/p", "local")
    await book.load()
    for uid, owner in [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("r1", "(rebuilt)")]:
        await book.insert(record(uid, owner))
        assert_counts_match(book)
    await book.insert(record("a1", "alice"))  # a repeated create: the stored record wins
    assert_counts_match(book)
    await book.save("a1", stage=Stage.SUBMITTED)
    await book.save("a2", stage=Stage.FINISHED)  # finished: its place is free
    assert_counts_match(book)
    assert book.holding("alice") == 1
    await book.save("r1", owner="bob")  # a rebuilt record claimed
    assert (book.holding("bob"), book.holding("(rebuilt)")) == (2, 0)
    await book.remove(book.get("b1"))
    await book.remove(book.get("a2"))  # a finished one removed: nothing to give back
    assert_counts_match(book)
    assert book.active() == 2
    await book.store.close()

    reloaded = PodBook(Store(tmp_path / "db"), "/p", "local")
    await reloaded.load()  # counted again from the store
    assert_counts_match(reloaded)
    assert reloaded.active() == 2
    await reloaded.store.close()


async def test_a_finished_pod_that_comes_back_to_life_counts_again(tmp_path):
    book = PodBook(Store(tmp_path / "db"), "/p", "local")
    await book.load()
    await book.insert(replace(record("x", "alice"), stage=Stage.FINISHED))
    assert book.active() == 0
    await book.save("x", stage=Stage.DELETING)
    assert book.holding("alice") == 1
    await book.store.close()
