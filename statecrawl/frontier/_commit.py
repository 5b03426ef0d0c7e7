"""Sending one group commit: retries through outages, and what to do when Redis says no.

:class:`Committer` is the part of :class:`statecrawl.frontier.state.WorkerState` that
talks to ``commit.lua``. It keeps the rules of :mod:`statecrawl.frontier.redis_errors`:

* **An outage** (connection refused or cut, timeout, loading, failover, OOM):
  the same batch is sent again with the same token, with backoff, one log
  line when the outage starts and one when it ends. A re-sent commit is
  applied at most once.
* **A refusal** (an error Redis will give the same command every time: a
  ``WRONGTYPE``, a Lua error, a value over its limits): the batch is sent
  again one element at a time, so the refusal costs only the element it
  belongs to. A refused request is dropped (logged, counted); a refused item
  is replaced by a small error item (``StoreError``); if even an empty commit
  or the acknowledgements are refused, the crawl's keys are broken and the
  worker stops (:class:`Fatal`, close reason ``redis_error``).
* **The crawl is gone** (:class:`~statecrawl.exceptions.CrawlStateLost`):
  raised as it is; the worker stops (``state_lost``).
* **Out of time**: once a stop has begun and ``STATECRAWL_STOP_TIMEOUT`` has
  passed, an outage is not waited out any more (:class:`StopTimeout`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from statecrawl.exceptions import CrawlStateLost
from statecrawl.frontier.redis_errors import Outage, is_transient
from statecrawl.frontier.store import (
    CommitResult,
    PendingItem,
    PendingRequest,
    error_item,
    new_token,
)

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from statecrawl.frontier.store import CrawlStore

__all__ = [
    "COMMIT_MAX_BYTES", "MAX_ITEM_BYTES", "STOP_TIMEOUT", "Committer", "Deadline", "Fatal",
    "StopTimeout", "take",
]

logger = logging.getLogger(__name__)

#: Default of ``STATECRAWL_STOP_TIMEOUT`` (s) and ``STATECRAWL_MAX_ITEM_BYTES``.
STOP_TIMEOUT = 30.0
MAX_ITEM_BYTES = 32 * 1024 * 1024
#: Most bytes of requests, or of items, in one commit call (Redis' query buffer is 1 GB).
COMMIT_MAX_BYTES = 64 * 1024 * 1024


def take(buffer: list[Any], count: int, size: int) -> list[Any]:
    """The head of *buffer*: at most *count* entries and about *size* bytes (at least one)."""
    taken, total = 0, 0
    for entry in buffer[:count]:
        total += len(entry.body)
        if taken and total > size:
            break
        taken += 1
    return buffer[:taken]


class Fatal(Exception):
    """The crawl cannot go on from this worker; ``reason`` is the spider's close reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StopTimeout(Exception):
    """A stop's ``STATECRAWL_STOP_TIMEOUT`` ran out while Redis was away."""


class Deadline:
    """A stop's deadline: none until :meth:`start`, then *timeout* seconds of the loop's clock."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._at: float | None = None

    def start(self) -> None:
        if self._at is None:
            self._at = asyncio.get_running_loop().time() + self.timeout

    def passed(self) -> bool:
        return self._at is not None and asyncio.get_running_loop().time() >= self._at

    def left(self, default: float) -> float:
        """Seconds until the deadline, at most *default* (*default* before :meth:`start`)."""
        if self._at is None:
            return default
        return max(0.0, min(default, self._at - asyncio.get_running_loop().time()))


class Committer:
    """Commit batches for one worker (see the module docstring)."""

    def __init__(
        self, store: CrawlStore, worker: str, dedupe: str, stats: StatsCollector,
        out_of_time: Callable[[], bool], on_recovered: Callable[[], None],
    ) -> None:
        self.store, self.worker, self.dedupe, self.stats = store, worker, dedupe, stats
        self.out_of_time, self.on_recovered = out_of_time, on_recovered
        self.outage = Outage(logger, "committing to Redis")

    async def commit(
        self, *, requests: Sequence[PendingRequest] = (), items: Sequence[PendingItem] = (),
        acks: Sequence[str] = (), counters: dict[str, int] | None = None, want: int = 0,
    ) -> CommitResult:
        """Commit one batch: retried through outages, taken apart if Redis refuses it.
        Counted in the worker's Scrapy stats once committed."""
        try:
            result = await self._send(requests=requests, items=items, acks=acks,
                                      counters=counters or {}, want=want)
        except (RedisError, OSError) as exc:  # permanent: _send retries the rest
            result = await self._apart(requests, items, acks, counters or {}, exc)
        stats = self.stats
        stats.inc_value("statecrawl/commits")
        stats.inc_value("statecrawl/enqueued", result.enqueued)
        stats.inc_value("statecrawl/duplicates", result.duplicates)
        stats.inc_value("statecrawl/limit_dropped", result.limit_dropped)
        stats.inc_value("statecrawl/acked", result.acked)
        stats.inc_value("statecrawl/items_stored", len(items))
        if result.duplicates:
            stats.inc_value("dupefilter/filtered", result.duplicates)
        return result

    async def _send(self, **batch: Any) -> CommitResult:
        token, backoff = new_token(), 0.1
        while True:
            try:
                result = await self.store.commit(self.worker, dedupe=self.dedupe, token=token,
                                                 **batch)
                break
            except CrawlStateLost:
                raise
            except (RedisError, OSError) as exc:
                if not is_transient(exc):
                    raise
                self.stats.inc_value("statecrawl/redis_errors")
                self.outage.failed(exc, backoff)
                if self.out_of_time():
                    raise StopTimeout from exc
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if self.outage.recovered():
            self.on_recovered()
        return result

    async def _one(self, total: list[int], **batch: Any) -> BaseException | None:
        """Send a part of a refused batch; the refusal, or None once it is committed."""
        try:
            result = await self._send(**batch)
        except (RedisError, OSError) as exc:
            return exc
        for i, n in enumerate((result.enqueued, result.duplicates, result.limit_dropped,
                               result.acked)):
            total[i] += n
        return None

    async def _apart(
        self, requests: Sequence[PendingRequest], items: Sequence[PendingItem],
        acks: Sequence[str], counters: dict[str, int], refusal: BaseException,
    ) -> CommitResult:
        logger.error("statecrawl: Redis refused a commit (%s: %s); sending its %d requests, "
                     "%d items and %d acks one by one to find what it refuses",
                     type(refusal).__name__, refusal, len(requests), len(items), len(acks))
        total = [0, 0, 0, 0]
        if (exc := await self._one(total, counters=counters)) is not None:
            raise Fatal("redis_error", f"Redis refuses every commit of crawl "
                                       f"{self.store.crawl_id!r}: {exc}")
        refused = 0
        for request in requests:
            if (exc := await self._one(total, requests=[request])) is not None:
                refused += 1
                if refused == len(requests) > 1:  # not one request: the frontier's keys are broken
                    raise Fatal("redis_error", f"Redis refuses every request: {exc}")
                self.stats.inc_value("statecrawl/requests_refused")
                await self._one(total, counters={"requests_refused": 1})
                logger.error("statecrawl: Redis refused a request (%s); dropped: %s",
                             exc, request.body[:300].decode("utf-8", "replace"))
        for item in items:
            if (exc := await self._one(total, items=[item])) is None:
                continue
            self.stats.inc_value("statecrawl/items_refused")
            logger.error("statecrawl: Redis refused the item %s (%s); storing an error item "
                         "in its place", item.key[:200], exc)
            replacement = error_item(item, "StoreError", f"Redis refused the item: {exc}"[:500])
            if (again := await self._one(total, items=[replacement],
                                         counters={"items_refused": 1})) is not None:
                raise Fatal("redis_error", f"Redis refuses even a small item: {again}")
        if acks and (exc := await self._one(total, acks=acks)) is not None:
            raise Fatal("redis_error", f"Redis refuses acknowledgements: {exc}")
        return CommitResult(total[0], total[1], total[2], total[3])
