"""The worker's side of a crawl: one connection, one write buffer, one flusher.

Every statecrawl component of a crawler (scheduler, item store, the completion
hook) shares one :class:`WorkerState`, got with :meth:`WorkerState.of`. It
owns what this worker has to tell Redis -- new requests, items, and
acknowledgements of finished leases -- and commits them with a *group
commit*: while one commit is in flight, new writes accumulate, and the next
commit carries all of them in one Lua call, in the order requests -> items ->
acks, so the ack of a request never reaches Redis before its callback's
output. Commits are spaced ``STATECRAWL_COMMIT_INTERVAL`` apart unless the
scheduler runs short, and each also leases what the scheduler's buffer lacks
(:attr:`WorkerState.lease_demand`). How one commit is sent, retried or taken
apart is :mod:`statecrawl.frontier._commit`.

A worker that cannot go on (Redis lost the crawl, or refuses it) says why
once and closes its spider (:meth:`WorkerState.fatal`); a stop is bounded by
``STATECRAWL_STOP_TIMEOUT`` (:attr:`WorkerState.stop`). Nothing blocks the
reactor: all I/O is ``redis.asyncio`` on the loop Scrapy's reactor runs on.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from scrapy import signals
from scrapy.exceptions import CloseSpider

from statecrawl.exceptions import ConfigError, CrawlStateLost, RedisUnavailable
from statecrawl.frontier._commit import (
    MAX_ITEM_BYTES,
    STOP_TIMEOUT,
    Committer,
    Deadline,
)
from statecrawl.frontier._engine import fail_exit, hangup_stops_gracefully
from statecrawl.frontier._group import GroupCommitMixin
from statecrawl.frontier._scrapy_redis import Lifecycle
from statecrawl.frontier.connection import connect, crawl_epoch, crawl_id_for, worker_redis
from statecrawl.frontier.liveness import Liveness
from statecrawl.frontier.packing import RequestCodec
from statecrawl.frontier.redis_errors import retry_outage
from statecrawl.frontier.replication import ReplicaWait
from statecrawl.frontier.shards import check_sharded, shard_count
from statecrawl.frontier.store import (
    CommitResult,
    CrawlStore,
    PendingItem,
    PendingRequest,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy.crawler import Crawler

__all__ = ["RETRY_ERRORS", "WorkerState", "freeze_startup_heap"]

logger = logging.getLogger(__name__)

#: Errors a Redis operation may fail with; which of them are worth a retry
#: with backoff is :func:`statecrawl.frontier.redis_errors.is_transient`'s call.
RETRY_ERRORS = (RedisError, OSError)


def freeze_startup_heap() -> int:
    """Collect, then move every object alive (modules, classes, the crawler just built) out of
    the garbage collector's reach; return how many there are.

    A worker allocates fast (requests, responses, leases), so full collections come often,
    and each walked every object its imports made: on ``bench/throughput.py`` that was ~15%
    of a worker's CPU per page (and of plain Scrapy's). Frozen objects are never collected:
    a cycle of start-up objects dropped later stays in memory, which start-up being over
    makes rare (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class WorkerState(GroupCommitMixin):
    """One worker's connection to one crawl (see the module docstring)."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.dedupe_mode = "none"  # set by the scheduler when a Redis dupefilter is in use
        self.store: CrawlStore | None = None
        self.client: Redis | None = None
        self._opening: asyncio.Future[None] | None = None
        self._requests: list[PendingRequest] = []
        self._items: list[PendingItem] = []
        self._acks: list[str] = []
        self._withheld: set[str] = set()  # leases whose output was not stored: give back, not ack
        self._giving_back: set[asyncio.Task[None]] = set()
        self._counters: collections.Counter[str] = collections.Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._liveness: Liveness | None = None
        self._batch = crawler.settings.getint("STATECRAWL_COMMIT_BATCH", 500)
        self._interval = crawler.settings.getfloat("STATECRAWL_COMMIT_INTERVAL", 0.05)
        self._hurry = asyncio.Event()  # commit now, without waiting out the interval
        self._last_commit = 0.0  # loop time the last commit was sent
        self._committing = False  # a commit is in flight (sent, result not yet delivered)
        self.heartbeat_interval = crawler.settings.getfloat("STATECRAWL_HEARTBEAT_INTERVAL", 0.1)
        self.worker_timeout = crawler.settings.getfloat("STATECRAWL_WORKER_TIMEOUT", 1.0)
        self._use_watchdog = crawler.settings.getbool("STATECRAWL_WATCHDOG", True)
        #: Started when the worker begins to stop: bounds every wait for Redis from then on.
        self.stop = Deadline(crawler.settings.getfloat("STATECRAWL_STOP_TIMEOUT", STOP_TIMEOUT))
        self.max_item_bytes = crawler.settings.getint("STATECRAWL_MAX_ITEM_BYTES", MAX_ITEM_BYTES)
        self.fatal_reason: str | None = None  # set when this worker cannot go on
        self._committer: Committer | None = None
        self.codec = RequestCodec()  # how this crawl's requests are stored (frontier.packing)
        if self.worker_timeout < 2 * self.heartbeat_interval:
            raise ConfigError(
                f"STATECRAWL_WORKER_TIMEOUT ({self.worker_timeout}s) must be at least twice "
                f"STATECRAWL_HEARTBEAT_INTERVAL ({self.heartbeat_interval}s)"
            )
        self.listeners: list[Callable[[CommitResult], None]] = []  # after each commit
        self.work_listeners: list[Callable[[str], None]] = []  # work appeared in the frontier
        self.forgotten_listeners: list[Callable[[], None]] = []  # this worker was declared dead
        self.recovered_listeners: list[Callable[[], None]] = []  # Redis answers again after errors
        self.open_hooks: list[Callable[[CrawlStore], Awaitable[None]]] = []  # before leasing
        #: whether a new sharded crawl goes by host (this worker brings a politeness budget)
        self.shard_by_host: Callable[[], bool] = lambda: False
        # How many requests to lease with the next commit, and whether the
        # scheduler is short of them (then the commit goes at once).
        self.info_sources: list[Callable[[], dict[str, Any]]] = []  # told by heartbeats
        self.lease_demand: Callable[[], tuple[int, bool]] | None = None
        crawler.signals.connect(self._close, signal=signals.spider_closed)
        hangup_stops_gracefully()

    @classmethod
    def of(cls, crawler: Crawler) -> WorkerState:
        """The crawler's WorkerState, created on first use (no I/O)."""
        state = getattr(crawler, "_statecrawl_state", None)
        if state is None:
            state = cls(crawler)
            crawler._statecrawl_state = state  # type: ignore[attr-defined]
        return state

    async def open(self) -> CrawlStore:
        """Connect (once, however many components ask) and return the store."""
        if self._opening is None:  # one task: every caller awaits its result, or its error
            self._opening = asyncio.ensure_future(self._connect_or_close())
        await asyncio.shield(self._opening)
        assert self.store is not None
        return self.store

    def worker_info(self) -> str:
        """What this worker's heartbeats say of it (``tokens`` ``<worker>|info``: JSON), read
        by ``statecrawl status`` and ``/metrics``. Runs in the heartbeat thread: sources only
        read their own plain values."""
        info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        for source in self.info_sources:
            try:
                info.update(source())
            except RuntimeError:  # a dict changed while read: next beat
                pass
        return json.dumps(info, separators=(",", ":"))

    async def _connect_or_close(self) -> None:
        try:
            await self._connect()
        except (RedisUnavailable, CrawlStateLost, ConfigError, RedisError, OSError) as exc:
            raise self.open_failed(exc) from None

    def open_failed(self, exc: BaseException) -> CloseSpider:
        """One error line (no traceback), exit status 1, and the spider closes at once."""
        if isinstance(exc, CrawlStateLost):
            reason = "state_lost"
        elif isinstance(exc, ConfigError):
            reason = "config_error"
        else:
            reason = "redis_unavailable"
        logger.error("statecrawl: %s", exc)
        self.fatal_reason = reason
        fail_exit(self.crawler)
        return CloseSpider(reason)

    async def _connect(self) -> None:
        settings = self.crawler.settings
        spider = self.crawler.spider
        url = await asyncio.to_thread(worker_redis, settings, spider, self.worker_id)
        self.client = await connect(url, name=f"statecrawl:{self.worker_id}")
        self.url = url
        store = CrawlStore(self.client, crawl_id_for(self.crawler))
        store.replica_wait = ReplicaWait.from_settings(settings, self.crawler.stats)
        epoch = crawl_epoch(settings)
        self.lifecycle = Lifecycle.from_settings(settings, spider, self.worker_timeout, epoch=epoch)
        await retry_outage("flushing the crawl", lambda: self.lifecycle.before_open(
            store, self.worker_id), logger)
        await retry_outage("joining the crawl", lambda: store.open_crawl(
            spider=spider.name if spider else "?",
            start_url=getattr(spider, "start_url", None),
            limit=getattr(spider, "crawl_limit", None),
            args=getattr(spider, "crawl_args", None),
            expect_epoch=epoch,
            shards=shard_count(settings.get("STATECRAWL_SHARDS", 1)),
            shard_by_host=self.shard_by_host(),
        ), logger)
        for hook in self.open_hooks:
            await retry_outage("configuring the crawl", lambda: hook(store), logger)
        if store.sharding is not None:
            await check_sharded(store, self.dedupe_mode)
        await retry_outage("reading the crawl's dictionary",
                           lambda: self.codec.load(store.client, store.keys), logger)
        self.store = store
        bulk = await store.max_value_bytes()
        if bulk is not None:  # Redis refuses values over this; leave room for the rest
            self.max_item_bytes = min(self.max_item_bytes, bulk - 64 * 1024)
        self._committer = Committer(store, self.worker_id, self.dedupe_mode, self.crawler.stats,
                                    self.stop.passed, self.recovered)
        await retry_outage("registering the worker",
                           lambda: store.heartbeat(self.worker_id, self.worker_timeout), logger)
        self._liveness = Liveness(
            url=url, keys=store.keys, worker=self.worker_id, interval=self.heartbeat_interval,
            timeout=self.worker_timeout, watchdog=self._use_watchdog, on_work=self._on_work,
            on_reclaimed=self._on_reclaimed, on_forgotten=self._on_forgotten,
            on_recovered=self.recovered, info=self.worker_info,
            shards=store.sharding.count if store.sharding is not None else 1,
        )
        await self._liveness.start()
        logger.info("statecrawl: worker %s joined crawl %r", self.worker_id, self.store.crawl_id)
        if self.crawler.settings.getbool("STATECRAWL_GC_FREEZE", True):
            logger.debug("statecrawl: %d start-up objects frozen out of the garbage collector's "
                         "reach (STATECRAWL_GC_FREEZE)", freeze_startup_heap())

    # -- stopping ---------------------------------------------------------------

    def fatal(self, reason: str, message: str) -> None:
        """This worker cannot go on: say why once, drop unsendable writes, close the spider."""
        if self.fatal_reason is not None:
            return
        self.fatal_reason = reason
        logger.error("statecrawl: %s; stopping this worker (%s). %d requests, %d items and %d "
                     "acks were not committed; their leases go back to the frontier if Redis "
                     "still has them", message, reason, len(self._requests), len(self._items),
                     len(self._acks))
        self._requests.clear()
        self._items.clear()
        self._acks.clear()
        fail_exit(self.crawler)
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:
            asyncio.ensure_future(engine.close_spider_async(reason=reason))

    # -- writes ---------------------------------------------------------------

    def add_request(self, request: PendingRequest) -> None:
        self._requests.append(request)
        self._kick()

    def add_item(self, item: PendingItem) -> None:
        self._items.append(item)
        self._kick()

    def count(self, name: str, delta: int = 1) -> None:
        """Add to a crawl-wide counter (the stats hash) with the next commit."""
        self._counters[name] += delta

    def ack(self, request_id: str) -> None:
        if request_id in self._withheld:
            self._withheld.discard(request_id)
            task = asyncio.ensure_future(self._give_back(request_id))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)
            return
        self._acks.append(request_id)
        self._kick()

    def withhold(self, request_id: str) -> None:
        """Lease *request_id*'s output could not be stored: when its request is done, give
        the lease back to the frontier (fetched again) instead of acknowledging it."""
        self._withheld.add(request_id)

    async def _give_back(self, request_id: str) -> None:
        if self.store is None:
            return
        try:
            await self.store.release(self.worker_id, [request_id])
        except RETRY_ERRORS as exc:  # still ours in Redis: given back when this worker leaves
            logger.warning("statecrawl: could not give lease %s back yet (%s)", request_id, exc)

    @property
    def pending_acks(self) -> list[str]:
        """Lease ids finished here whose ack is not committed yet (still ours)."""
        return list(self._acks)

    @property
    def pending_writes(self) -> bool:
        return bool(self._requests or self._items or self._acks) or (
            self._flusher is not None and not self._flusher.done()
        )

    @property
    def queued_requests(self) -> int:
        """Requests written here and not committed yet."""
        return len(self._requests)

    @property
    def commit_coming(self) -> bool:
        """A commit is in flight or writes are waiting: a lease will ride along."""
        return self._committing or bool(self._requests or self._items or self._acks)

    @property
    def committing(self) -> bool:
        return self._committing

    # -- liveness events (from the heartbeat thread and the work listener) ----

    def _on_work(self, kind: str) -> None:
        for listener in self.work_listeners:
            listener(kind)

    def _on_reclaimed(self, reclaimed: int, dead: list[str]) -> None:
        self.crawler.stats.inc_value("statecrawl/reclaimed", reclaimed)
        logger.warning("statecrawl: workers %s stopped answering; %d of their requests went "
                       "back to the frontier", ", ".join(dead), reclaimed)

    def recovered(self) -> None:
        """Redis answers again after errors: it may have lost or kept what we sent."""
        logger.info("statecrawl: Redis is reachable again; reconciling this worker's leases")
        self.crawler.stats.inc_value("statecrawl/redis_recoveries")
        for listener in self.recovered_listeners:
            listener()

    def _on_forgotten(self) -> None:
        self.crawler.stats.inc_value("statecrawl/forgotten")
        logger.warning("statecrawl: this worker was declared dead (heartbeat older than %.1fs); "
                       "its leases may be served by others", self.worker_timeout)
        for listener in self.forgotten_listeners:
            listener()

    async def _close(self, reason: str = "") -> None:
        if self.store is None:
            return
        self.stop.start()
        try:
            await self.flush()
            if self.fatal_reason is None:  # SCHEDULER_PERSIST=False: forget a finished crawl
                await self.lifecycle.on_close(self.store, self.worker_id, reason,
                                              max(1.0, self.stop.left(5)))
            # Stop beating first: a beat after leave() would register this
            # worker again, as a ghost that others later declare dead.
            if self._liveness is not None:
                await self._liveness.stop_heartbeat()
            if self.fatal_reason != "state_lost":
                try:
                    if await asyncio.wait_for(self.store.leave(self.worker_id),
                                              max(1.0, self.stop.left(10.0))):
                        logger.warning("statecrawl: gave back leases this worker had lost track of")
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    logger.warning("statecrawl: could not leave the crawl (%s); the watchdog or "
                                   "the other workers' heartbeats give its leases back", exc)
        finally:
            if self._liveness is not None:
                await self._liveness.stop(max(1.0, self.stop.left(10.0)))
            assert self.client is not None
            if self.store.replica_wait is not None:
                await self.store.replica_wait.aclose()
            await self.client.aclose()
            self.store = None
