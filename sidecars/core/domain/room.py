"""Places for pods: the site's `max_pods` and one identity's share of them.

Counted over the pods that still hold a place (not finished or deleted) plus the creates in
flight, so that a burst cannot overshoot between the check and the insert (a create awaits the
account check, staging enrolment and the directory write in between).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sidecars.core.domain.book import PodBook
from sidecars.core.domain.errors import Exhausted


class Room:
    def __init__(self, book: PodBook, max_pods: int, max_pods_per_identity: int | None) -> None:
        self.book = book
        self.max_pods = max_pods
        self.max_pods_per_identity = max_pods_per_identity
        self._in_flight: Counter[str] = Counter()  # owner -> creates between check and insert

    @contextmanager
    def place(self, owner: str) -> Iterator[None]:
        """Hold a place for one new pod of `owner` while it is created (Exhausted if none is left)."""
        self._check(owner)
        self._in_flight[owner] += 1
        try:
            yield
        finally:
            self._in_flight[owner] -= 1
            if not self._in_flight[owner]:
                del self._in_flight[owner]

    def _check(self, owner: str) -> None:
        total, own = self._occupied(owner)
        if total >= self.max_pods:
            raise Exhausted(
                f"the site is full: {total} pods hold its {self.max_pods} places (max_pods); "
                "delete finished pods or try again later"
            )
        limit = self.max_pods_per_identity
        if limit is not None and own >= limit:
            raise Exhausted(
                f"you have {own} pods here, the most one identity may have (max_pods_per_identity: {limit}); "
                "delete finished pods or try again later"
            )

    def _occupied(self, owner: str) -> tuple[int, int]:
        """Places held (the book's count, kept as records change) and being taken, in all and by `owner`."""
        total = self.book.active() + self._in_flight.total()
        return total, self.book.holding(owner) + self._in_flight[owner]
