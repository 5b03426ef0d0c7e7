"""The scheduler's callbacks: a request done, a commit back, work announced, the spider idle.

:class:`ListenersMixin` is the half of :class:`statecrawl.frontier.scheduler.Scheduler`
that others call back, registered when it opens: the engine, when it has
finished a request (its lease is acknowledged through the worker's write
buffer, after that request's output) and when the spider goes idle (kept
open with ``DontCloseSpider`` until the whole crawl is finished); and
:class:`~statecrawl.frontier.state.WorkerState`, after each group commit (what
it leased goes to the local buffer), when work is announced or reclaimed,
when Redis may have lost writes, and when this worker's buffered leases were
reclaimed. The leasing they set off is :mod:`statecrawl.frontier._leasing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import DontCloseSpider

from statecrawl.frontier._engine import wake

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

    from statecrawl.frontier._buffer import LeaseBuffer
    from statecrawl.frontier.state import WorkerState
    from statecrawl.frontier.store import CommitResult

__all__ = ["LEASE_META_KEY", "ListenersMixin"]

#: ``request.meta`` key holding the lease id of a request this worker leased.
LEASE_META_KEY = "_statecrawl_lease"


class ListenersMixin:
    """The scheduler's callbacks; the attributes below are the scheduler's."""

    crawler: Crawler
    state: WorkerState
    _buffer: LeaseBuffer
    _sent: set[bytes]
    _open_leases: dict[str, str]
    _open_since: dict[str, float]
    _wakeup: asyncio.Event
    _idle: bool
    _finished: bool
    _must_reconcile: bool
    _urgent: bool
    _local_dupes: int
    _short: Callable[[], bool]
    _refill: Callable[[], None]
    _accept: Callable[..., None]

    def _on_done(self, request: Request) -> None:
        lease_id = request.meta.get(LEASE_META_KEY)
        if lease_id is not None and lease_id in self._open_leases:
            del self._open_leases[lease_id]
            self._open_since.pop(lease_id, None)
            self.state.ack(lease_id)

    def _count_local_dupes(self) -> None:
        if self._local_dupes:
            self.crawler.stats.inc_value("statecrawl/duplicates_local", self._local_dupes)
            self.crawler.stats.inc_value("dupefilter/filtered", self._local_dupes)
            self._local_dupes = 0

    def _on_commit(self, result: CommitResult) -> None:
        self._count_local_dupes()
        if result.leased:
            self.crawler.stats.inc_value("statecrawl/commit_leases")
            self._accept(list(result.leased))
            self._idle = False
            wake(self.crawler.engine)
        if result.enqueued or result.leased:
            self._wakeup.set()
            if self._short():
                self._refill()
        elif result.acked and self._short() and (
                not self._open_leases
                or (self.state.store is not None and self.state.store.next_due_in is not None)):
            # Nothing came with it, and either nothing of ours in flight will commit to ask
            # again or a polite crawl's hosts wait for their slots: the refill loop sleeps
            # until the first is due (woken if it sleeps already: this ack freed a slot).
            # Without it the engine's 5 s heartbeat asked next.
            self._wakeup.set()
            self._refill()

    def _on_work(self, kind: str) -> None:
        if kind in ("reclaimed", "released"):
            # Another worker's requests are back and have waited longest: take
            # some now, ahead of our buffer, instead of when it runs low.
            self._urgent = True
        self._wakeup.set()
        self._refill()

    def _on_recovered(self) -> None:
        # Redis may have lost writes (restart with appendfsync everysec) or kept
        # a lease whose reply we lost: forget which links we already sent, and
        # give back leases we hold in Redis without knowing (next refill pass).
        self._sent.clear()
        self._must_reconcile = True
        self._wakeup.set()  # a refill loop waiting for work reconciles now
        self._refill()

    def _on_forgotten(self) -> None:
        # Our buffered leases were reclaimed and may be another worker's now.
        self.crawler.stats.inc_value("statecrawl/dropped_reclaimed", len(self._buffer))
        self._buffer.clear()

    def _on_idle(self, spider: Spider) -> None:
        if self._finished and not self.state.pending_writes and not self._open_leases:
            return  # the whole crawl is done: let the spider close
        self._idle = True
        self._wakeup.set()
        self._refill()
        raise DontCloseSpider
