"""The scheduler's buffer of leased requests.

Plain leases wait in lease order. A polite crawl's leases carry a slot
(:mod:`statecrawl.frontier.hosts`): they wait here, ordered by slot time, and
are handed to the engine :data:`SLOT_LEAD` seconds before their slot, so a
request waiting for its slot holds none of the engine's ``CONCURRENT_REQUESTS``
and still reaches :class:`~statecrawl.frontier.politeness.PolitenessMiddleware`
(which sends it at the slot) through the other middlewares in time.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy import Request

__all__ = ["SLOT_LEAD", "SLOT_META_KEY", "LeaseBuffer"]

#: ``request.meta`` key (worker-local, never stored) of a leased request's slot:
#: ``(host, local time.time() at which it may be sent, local time it was granted)``.
SLOT_META_KEY = "_statecrawl_slot"

#: Seconds before its slot that a polite request goes to the engine.
SLOT_LEAD = 0.05


class LeaseBuffer:
    """``(lease id, request)`` pairs: plain ones first in, first out; polite ones by slot."""

    def __init__(self) -> None:
        self._plain: deque[tuple[str, Request]] = deque()
        self._timed: list[tuple[float, int, str, Request]] = []  # heap by slot time
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._plain) + len(self._timed)

    def __bool__(self) -> bool:
        return bool(self._plain or self._timed)

    def __iter__(self) -> Iterator[tuple[str, Request]]:
        yield from self._plain
        yield from ((lease_id, request) for _, _, lease_id, request in self._timed)

    def extend(self, pairs: Iterable[tuple[str, Request]], *, front: bool = False) -> None:
        plain = []
        for lease_id, request in pairs:
            slot = request.meta.get(SLOT_META_KEY)
            if slot is None:
                plain.append((lease_id, request))
                continue
            self._seq += 1
            heapq.heappush(self._timed, (slot[1], self._seq, lease_id, request))
        if front:
            self._plain.extendleft(reversed(plain))
        else:
            self._plain.extend(plain)

    def clear(self) -> None:
        self._plain.clear()
        self._timed.clear()

    def pop_ready(self, now: float) -> tuple[str, Request] | None:
        """The next request the engine may have at *now* (a ``time.time()``), or None."""
        if self._timed and self._timed[0][0] - SLOT_LEAD <= now:
            _, _, lease_id, request = heapq.heappop(self._timed)
            return lease_id, request
        if self._plain:
            return self._plain.popleft()
        return None

    def next_due(self) -> float | None:
        """When the earliest polite request may go to the engine (``time.time()``), if any."""
        return self._timed[0][0] - SLOT_LEAD if self._timed else None

    def call_when_due(self, callback: Callable[[], None]) -> None:
        """Call *callback* once, when the earliest polite request may go to the engine."""
        when = self.next_due()
        if when is None or (self._timer is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, when - time.time()), self._fire, callback)

    def _fire(self, callback: Callable[[], None]) -> None:
        self._timer = None
        callback()
