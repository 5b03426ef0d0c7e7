"""The worker's side of a crawl: one connection, one write buffer, one flusher.

Every statecrawl component of a crawler (scheduler, item store, the completion
hook) shares one :class:`WorkerState`, got with :meth:`WorkerState.of`. It
owns what this worker has to tell Redis:

* new requests (from the scheduler),
* items (from the item store pipeline),
* acknowledgements of finished leases (from the completion hook),

and commits them with a *group commit*: while one commit is in flight, new
writes accumulate, and the next commit carries all of them in one Lua call.
Writes are committed in the order requests -> items -> acks, so the ack of a
request never reaches Redis before the output of its callback.

Back-to-back commits are spaced at least ``STATECRAWL_COMMIT_INTERVAL``
apart unless the scheduler is running short of requests, and each commit
also leases what the scheduler's buffer lacks (:attr:`WorkerState.lease_demand`):
a busy worker makes one round trip per interval instead of one commit and
one lease per finished page.

Nothing here blocks the reactor: all I/O is ``redis.asyncio`` on the asyncio
loop that Scrapy's asyncio reactor runs on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from scrapy import signals

from statecrawl.connection import connect, resolve_redis_url
from statecrawl.exceptions import ConfigError
from statecrawl.keys import validate_crawl_id
from statecrawl.liveness import HeartbeatThread, listen_for_work, start_watchdog
from statecrawl.store import CommitResult, CrawlStore, PendingItem, PendingRequest, new_token

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy.crawler import Crawler

__all__ = ["RETRY_ERRORS", "WorkerState", "crawl_id_for"]

logger = logging.getLogger(__name__)

#: Errors after which a Redis operation is retried with backoff: the data stays
#: in the worker's buffers, so nothing is lost while Redis is unreachable or
#: refuses writes (e.g. over maxmemory).
RETRY_ERRORS = (RedisError, OSError)


def crawl_id_for(crawler: Crawler) -> str:
    """The crawl id: ``STATECRAWL_CRAWL_ID``, the spider's ``crawl_id``, or its name."""
    spider = crawler.spider
    crawl_id = (
        crawler.settings.get("STATECRAWL_CRAWL_ID")
        or getattr(spider, "crawl_id", None)
        or (spider.name if spider is not None else None)
    )
    if not crawl_id:
        raise ConfigError("no crawl id: set STATECRAWL_CRAWL_ID or give the spider a name")
    return validate_crawl_id(str(crawl_id))


class WorkerState:
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
        self._counters: collections.Counter[str] = collections.Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._heartbeat: HeartbeatThread | None = None
        self._listener: asyncio.Task[None] | None = None
        self._batch = crawler.settings.getint("STATECRAWL_COMMIT_BATCH", 500)
        self._interval = crawler.settings.getfloat("STATECRAWL_COMMIT_INTERVAL", 0.05)
        self._hurry = asyncio.Event()  # commit now, without waiting out the interval
        self._last_commit = 0.0  # loop time the last commit was sent
        self._committing = False  # a commit is in flight (sent, result not yet delivered)
        self.heartbeat_interval = crawler.settings.getfloat("STATECRAWL_HEARTBEAT_INTERVAL", 0.1)
        self.worker_timeout = crawler.settings.getfloat("STATECRAWL_WORKER_TIMEOUT", 1.0)
        self._use_watchdog = crawler.settings.getbool("STATECRAWL_WATCHDOG", True)
        self._watchdog: subprocess.Popen[bytes] | None = None
        if self.worker_timeout < 2 * self.heartbeat_interval:
            raise ConfigError(
                f"STATECRAWL_WORKER_TIMEOUT ({self.worker_timeout}s) must be at least twice "
                f"STATECRAWL_HEARTBEAT_INTERVAL ({self.heartbeat_interval}s)"
            )
        self.listeners: list[Callable[[CommitResult], None]] = []  # after each commit
        self.work_listeners: list[Callable[[str], None]] = []  # work appeared in the frontier
        self.forgotten_listeners: list[Callable[[], None]] = []  # this worker was declared dead
        self.recovered_listeners: list[Callable[[], None]] = []  # Redis answers again after errors
        # How many requests to lease with the next commit, and whether the
        # scheduler is short of them (then the commit goes at once).
        self.lease_demand: Callable[[], tuple[int, bool]] | None = None
        crawler.signals.connect(self._close, signal=signals.spider_closed)

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
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_future()
            try:
                await self._connect()
            except BaseException as exc:
                self._opening.set_exception(exc)
                self._opening.exception()  # mark retrieved; re-raised below
                raise
            self._opening.set_result(None)
        else:
            await asyncio.shield(self._opening)
        assert self.store is not None
        return self.store

    async def _connect(self) -> None:
        settings = self.crawler.settings
        url = await asyncio.to_thread(resolve_redis_url, settings)
        self.client = await connect(url, name=f"statecrawl:{self.worker_id}")
        self.url = url
        self.store = CrawlStore(self.client, crawl_id_for(self.crawler))
        spider = self.crawler.spider
        await self.store.open_crawl(
            spider=spider.name if spider else "?",
            start_url=getattr(spider, "start_url", None),
            limit=getattr(spider, "crawl_limit", None),
            args=getattr(spider, "crawl_args", None),
        )
        await self.store.heartbeat(self.worker_id, self.worker_timeout)
        self._heartbeat = HeartbeatThread(
            url=url, keys=self.store.keys, worker=self.worker_id,
            interval=self.heartbeat_interval, timeout=self.worker_timeout,
            loop=asyncio.get_running_loop(), on_reclaimed=self._on_reclaimed,
            on_forgotten=self._on_forgotten, on_recovered=self.recovered,
        )
        self._heartbeat.start()
        if self._use_watchdog:
            self._watchdog = await asyncio.to_thread(
                start_watchdog, url, self.store.keys, self.worker_id)
        self._listener = asyncio.ensure_future(
            listen_for_work(url, self.store.keys.queue, self._on_work))
        logger.info("statecrawl: worker %s joined crawl %r", self.worker_id, self.store.crawl_id)

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
        self._acks.append(request_id)
        self._kick()

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
    def commit_coming(self) -> bool:
        """A commit is in flight or writes are waiting: a lease will ride along."""
        return self._committing or bool(self._requests or self._items or self._acks)

    @property
    def committing(self) -> bool:
        return self._committing

    def hurry(self) -> None:
        """Send the next commit without waiting out ``STATECRAWL_COMMIT_INTERVAL``."""
        self._hurry.set()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def flush(self) -> None:
        """Wait until every write made so far is committed."""
        while self.pending_writes:
            self._kick()  # no-op while a flush is running
            self.hurry()
            assert self._flusher is not None
            await asyncio.shield(self._flusher)

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

    async def _commit(self, **batch: Any) -> CommitResult:
        """Commit *batch* with one token until Redis has it, backing off while it fails."""
        assert self.store is not None
        token, backoff = new_token(), 0.1
        self._committing = True
        try:
            while True:
                try:
                    result = await self.store.commit(
                        self.worker_id, dedupe=self.dedupe_mode, token=token, **batch)
                    break
                except RETRY_ERRORS as exc:
                    self.crawler.stats.inc_value("statecrawl/redis_errors")
                    logger.error(
                        "statecrawl: commit to Redis failed (%s); keeping %d requests, %d items "
                        "and %d acks, retrying in %.1fs", exc, len(self._requests),
                        len(self._items), len(self._acks), backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self._committing = False
        if backoff > 0.1:
            self.recovered()
        return result

    async def _flush_loop(self) -> None:
        stats = self.crawler.stats
        loop = asyncio.get_running_loop()
        while self._requests or self._items or self._acks:
            await self._linger()
            self._hurry.clear()
            self._last_commit = loop.time()
            b = self._batch
            requests, items, acks = self._requests[:b], self._items[:b], self._acks[:b]
            counters, self._counters = dict(self._counters), collections.Counter()
            want = self.lease_demand()[0] if self.lease_demand is not None else 0
            result = await self._commit(
                requests=requests, items=items, acks=acks, counters=counters, want=want)
            del self._requests[: len(requests)]
            del self._items[: len(items)]
            del self._acks[: len(acks)]
            stats.inc_value("statecrawl/commits")
            stats.inc_value("statecrawl/enqueued", result.enqueued)
            stats.inc_value("statecrawl/duplicates", result.duplicates)
            stats.inc_value("statecrawl/limit_dropped", result.limit_dropped)
            stats.inc_value("statecrawl/acked", result.acked)
            stats.inc_value("statecrawl/items_stored", len(items))
            if result.duplicates:
                stats.inc_value("dupefilter/filtered", result.duplicates)
            for listener in self.listeners:
                listener(result)

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

    async def _close(self) -> None:
        if self.store is None:
            return
        try:
            await self.flush()
            # Stop beating first: a beat after leave() would register this
            # worker again, as a ghost that others later declare dead.
            await self._stop_heartbeat()
            if await self.store.leave(self.worker_id):
                logger.warning("statecrawl: gave back leases this worker had lost track of")
        finally:
            await self._stop_heartbeat()
            await self._stop_watchdog()
            if self._listener is not None:
                self._listener.cancel()
            assert self.client is not None
            await self.client.aclose()
            self.store = None

    async def _stop_watchdog(self) -> None:
        """Let the watchdog go: it runs leave (a no-op now) and exits."""
        proc, self._watchdog = self._watchdog, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            await asyncio.to_thread(self._heartbeat.join, 5)
            self._heartbeat = None
