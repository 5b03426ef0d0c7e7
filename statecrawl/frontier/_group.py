"""The group commit of :class:`~statecrawl.frontier.state.WorkerState`: its flush loop.

While one commit is in flight, new writes accumulate in the worker's buffers
(requests, items, acks, counters), and the next commit carries all of them in
one Lua call, in the order requests -> items -> acks. Back-to-back commits are
spaced ``STATECRAWL_COMMIT_INTERVAL`` apart unless something hurries them (a
full batch, a scheduler short of requests, a flush); each commit also leases
what the scheduler lacks (``lease_demand``). How one commit is sent, retried
or taken apart is :mod:`statecrawl.frontier._commit`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from statecrawl.exceptions import CrawlStateLost
from statecrawl.frontier._commit import (
    COMMIT_MAX_BYTES,
    Committer,
    Deadline,
    Fatal,
    StopTimeout,
    take,
)

if TYPE_CHECKING:
    from statecrawl.frontier.packing import RequestCodec
    from statecrawl.frontier.store import (
        CommitResult,
        CrawlStore,
        PendingItem,
        PendingRequest,
    )

__all__ = ["GroupCommitMixin"]

logger = logging.getLogger("statecrawl.frontier.state")


class GroupCommitMixin:
    """The flush loop of :class:`~statecrawl.frontier.state.WorkerState`, whose attributes
    these are."""

    _requests: list[PendingRequest]
    _items: list[PendingItem]
    _acks: list[str]
    _counters: collections.Counter[str]
    _flusher: asyncio.Task[None] | None
    _batch: int
    _interval: float
    _hurry: asyncio.Event
    _last_commit: float
    _committing: bool
    _committer: Committer | None
    stop: Deadline
    max_item_bytes: int
    fatal_reason: str | None
    dedupe_mode: str
    codec: RequestCodec
    listeners: list[Callable[[CommitResult], None]]
    lease_demand: Callable[[], tuple[int, bool]] | None

    def fatal(self, reason: str, message: str) -> None:
        raise NotImplementedError

    def hurry(self) -> None:
        """Send the next commit without waiting out ``STATECRAWL_COMMIT_INTERVAL``."""
        self._hurry.set()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def flush(self) -> None:
        """Wait until every write made so far is committed (or the stop runs out of time)."""
        while self.pending_writes and self.fatal_reason is None:
            self._kick()  # no-op while a flush is running
            self.hurry()
            assert self._flusher is not None
            await asyncio.shield(self._flusher)
            if self._gave_up():
                return

    def _gave_up(self) -> bool:
        """After a stop timed out: forget what is left (its leases are still ours in Redis)."""
        if not self.stop.passed() or not (self._requests or self._items or self._acks):
            return False
        logger.error(
            "statecrawl: STATECRAWL_STOP_TIMEOUT (%.0fs) ran out while Redis was unreachable; "
            "%d requests, %d items and %d acks were not committed. The requests this worker "
            "leased go back to the frontier when it is gone and are fetched again",
            self.stop.timeout, len(self._requests), len(self._items), len(self._acks))
        self._requests.clear()
        self._items.clear()
        self._acks.clear()
        return True

    async def wait_commit(self, timeout: float) -> None:
        """Wait, at most *timeout* s, for the commit in flight (if any) to return."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._committing and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def _linger(self) -> None:
        """Space back-to-back commits ``STATECRAWL_COMMIT_INTERVAL`` apart, unless hurried."""
        loop = asyncio.get_running_loop()
        wait = self._last_commit + self._interval - loop.time()
        if wait <= 0 or self._hurry.is_set():
            return
        if max(len(self._requests), len(self._items), len(self._acks)) >= self._batch:
            return
        if self.lease_demand is not None and self.lease_demand()[1]:
            return  # the scheduler is short of requests
        try:
            await asyncio.wait_for(self._hurry.wait(), wait)
        except asyncio.TimeoutError:
            pass

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (self._requests or self._items or self._acks) and self.fatal_reason is None:
            await self._linger()
            self._hurry.clear()
            self._last_commit = loop.time()
            b, size = self._batch, max(COMMIT_MAX_BYTES, self.max_item_bytes + (1 << 20))
            requests, items = take(self._requests, b, size), take(self._items, b, size)
            acks = self._acks[:b]
            counters, self._counters = dict(self._counters), collections.Counter()
            want = self.lease_demand()[0] if self.lease_demand is not None else 0
            assert self._committer is not None
            self._committer.dedupe = self.dedupe_mode
            if self.codec.ready():  # once: the crawl's dictionary
                await self._sync_codec(self._committer.store)
            self._committing = True
            try:
                result = await self._committer.commit(
                    requests=requests, items=items, acks=acks, counters=counters, want=want)
            except StopTimeout:
                self._counters.update(counters)
                return
            except CrawlStateLost as exc:
                self.fatal("state_lost", str(exc))
                return
            except Fatal as exc:
                self.fatal(exc.reason, str(exc))
                return
            finally:
                self._committing = False
            del self._requests[: len(requests)]
            del self._items[: len(items)]
            del self._acks[: len(acks)]
            for listener in self.listeners:
                try:
                    listener(result)
                except Exception:
                    logger.exception("statecrawl: error in a commit listener")

    async def _sync_codec(self, store: CrawlStore) -> None:
        try:
            await self.codec.sync(store.client, store.keys)
        except (RedisError, OSError) as exc:  # tried again before the next commit
            logger.debug("statecrawl: dictionary not proposed yet: %s", exc)
