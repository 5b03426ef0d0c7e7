"""A Scrapy scheduler whose frontier is shared, durable and leased.

Enable it with ``SCHEDULER = "statecrawl.frontier.scheduler.Scheduler"`` (the add-on
does). Scrapy calls a scheduler synchronously; this one never waits on Redis
inside those calls:

* :meth:`enqueue_request` serializes the request and hands it to the worker's
  write buffer (:class:`statecrawl.frontier.state.WorkerState`), which commits it,
  deduplicated in Redis, with the next group commit.
* :meth:`next_request` pops from a small local buffer of *leased* requests
  (``STATECRAWL_PREFETCH``). While the worker is busy, each group commit
  also leases what the buffer lacks; a background task leases on its own
  only when no commit is coming (start, idle, reclaimed work). Either wakes
  the engine as soon as requests arrive.
* When the engine has finished a request (callback output committed to the
  write buffer), its lease is acknowledged through the same buffer, after
  that output.

A worker is idle when its buffer is empty and nothing is in flight locally.
It then keeps the spider open (``DontCloseSpider``) while any other worker
still holds leases, and lets it close when the whole crawl is finished:
frontier empty and no lease anywhere. ``statecrawl cancel`` makes every
worker close with reason ``cancelled``.

*Service mode* (``STATECRAWL_SERVICE = True``, bool, default ``False``): the
crawl never finishes. An idle worker neither marks it finished nor closes
when the frontier is empty; it waits until the crawl is cancelled or the
worker is stopped by a signal. Once a lease finds the frontier drained, a
service worker waits for work to be announced on the frontier's pub/sub
channel (the first request into an empty frontier publishes), polling every
``STATECRAWL_IDLE_POLL_MAX`` only as a safety net: it does not lease again
each time it runs short, nor hurry its commits, for a frontier it knows is
empty. Reclaim and commits are unchanged. The ``scrape`` spider's crawl (the
API's scrapes, :mod:`statecrawl.frontier.service`) runs this way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.misc import build_from_crawler, load_object

from statecrawl.exceptions import CrawlStateLost, SerializationError
from statecrawl.frontier._buffer import LeaseBuffer
from statecrawl.frontier._engine import on_stop, wake, watch_completed
from statecrawl.frontier._leasing import LeasingMixin
from statecrawl.frontier._listeners import LEASE_META_KEY, ListenersMixin
from statecrawl.frontier._scrapy_redis import is_scrapy_redis_spider, say_joined, say_nothing_new
from statecrawl.frontier.packing import host_of_url
from statecrawl.frontier.redis_errors import Outage, is_transient, retry_outage
from statecrawl.frontier.scope import FetchScope
from statecrawl.frontier.serialize import request_to_json
from statecrawl.frontier.start_urls import StartUrlFeed
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.frontier.store import PendingRequest

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

__all__ = ["LEASE_META_KEY", "Scheduler"]

logger = logging.getLogger(__name__)


class Scheduler(LeasingMixin, ListenersMixin, BaseScheduler):
    """Redis-backed, leasing scheduler (see the module docstring)."""

    def __init__(
        self, crawler: Crawler, dupefilter: object, *, prefetch: int,
        dedupe_start_requests: bool, idle_poll_max: float, sent_cache: int = 1_000_000,
        service: bool = False,
    ) -> None:
        self.crawler = crawler
        self.df = dupefilter
        # A statecrawl dupefilter is checked in Redis, inside the commit script;
        # any other is asked locally, as Scrapy's own scheduler does.
        self._redis_dedupe = getattr(dupefilter, "statecrawl_mode", None) is not None
        self.prefetch = max(1, prefetch)
        self.dedupe_start_requests = dedupe_start_requests
        self.idle_poll_max = idle_poll_max
        self.service = service  # never finishes: idle workers wait for work (module docstring)
        self.state = WorkerState.of(crawler)
        self.spider: Spider | None = None
        self._buffer = LeaseBuffer()
        # Fingerprints this worker has already sent to Redis. Only a cache:
        # the crawl's `seen` set decides; this spares serializing and sending
        # the same link again (most links of a site are repeats).
        self._sent: set[bytes] = set()
        self._sent_max = sent_cache
        # lease id -> URL of the leased requests the engine has (a request scheduled
        # again under one of these, with the same URL, is a retry, not a new page)
        self._open_leases: dict[str, str] = {}
        self._open_since: dict[str, float] = {}  # lease id -> when Scrapy got it (oldest first)
        self.scope: FetchScope | None = None
        self._quarantining: set[asyncio.Task[None]] = set()
        self._open_error: CloseSpider | None = None
        self._lease_outage = Outage(logger, "leasing from Redis")
        self._refill_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._idle = False
        self._finished = False
        self._closing = False
        self._draining: asyncio.Future[None] | None = None
        self._must_reconcile = False
        self._urgent = False
        self._leasing = False  # the refill loop has a lease call in flight
        self._drained = False  # service mode: the refill loop waits for work to be announced
        self._local_dupes = 0  # not yet added to the stats
        self._feed: StartUrlFeed | None = None  # a scrapy-redis spider's start URLs
        self._joined_finished = False  # the crawl was finished when this worker joined

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Scheduler:
        settings = crawler.settings
        df_cls = load_object(settings["DUPEFILTER_CLASS"])
        return cls(
            crawler,
            build_from_crawler(df_cls, crawler),
            prefetch=settings.getint("STATECRAWL_PREFETCH")
            or 2 * settings.getint("CONCURRENT_REQUESTS"),
            dedupe_start_requests=settings.getbool("STATECRAWL_DEDUPE_START_REQUESTS", True),
            idle_poll_max=settings.getfloat("STATECRAWL_IDLE_POLL_MAX", 0.5),
            sent_cache=settings.getint("STATECRAWL_LOCAL_SEEN_MAX", 1_000_000),
            service=settings.getbool("STATECRAWL_SERVICE", False),
        )

    # -- lifecycle -------------------------------------------------------------

    def open(self, spider: Spider) -> Deferred[None]:
        self.spider = spider
        self.scope = FetchScope.for_spider(spider)
        if self.scope is None:
            logger.warning("statecrawl: spider %r declares no scope (allowed_domains): requests "
                           "read from Redis are checked to be http(s) only, not for their host",
                           spider.name)
        self.crawler.signals.connect(self._opened, signal=signals.spider_opened)
        self.state.info_sources.append(self._lease_info)
        return deferred_from_coro(self._open())

    def _lease_info(self) -> dict[str, Any]:
        """Leases held (buffered + in Scrapy) and the age of the oldest in Scrapy (s), for the
        heartbeat thread (plain reads; a dict changed meanwhile raises RuntimeError)."""
        oldest = next(iter(self._open_since.values()), None)
        return {"leases": len(self._buffer) + len(self._open_leases),
                "oldest_lease_s": None if oldest is None else round(time.monotonic() - oldest, 3)}

    def _opened(self, spider: Spider) -> None:
        # Raised here rather than from open(): a CloseSpider from the scheduler's
        # open() would keep the other components from opening (and then their
        # close fails, with tracebacks); from spider_opened the spider closes cleanly.
        if self._open_error is not None:
            raise self._open_error

    async def _open(self) -> None:
        if self._redis_dedupe:
            self.state.dedupe_mode = self.df.statecrawl_mode  # type: ignore[attr-defined]
            self.df.driven_by_scheduler = True  # type: ignore[attr-defined]
        try:
            store = await self.state.open()
        except CloseSpider as exc:  # logged by WorkerState, in one line
            self._open_error = exc
            return
        self.state.listeners.append(self._on_commit)
        self.state.work_listeners.append(self._on_work)
        self.state.forgotten_listeners.append(self._on_forgotten)
        self.state.recovered_listeners.append(self._on_recovered)
        self.state.lease_demand = self._lease_demand
        watch_completed(self.crawler.engine, self._on_done)
        on_stop(self.crawler.engine, self._drain)
        self.crawler.signals.connect(self._on_idle, signal=signals.spider_idle)
        try:  # an outage while a worker starts is waited out, for a while
            await retry_outage("opening the dupefilter", self._open_dupefilter, logger)
            status = await retry_outage("reading the crawl's status", store.status, logger)
        except (*RETRY_ERRORS, CrawlStateLost) as exc:
            self._open_error = self.state.open_failed(exc)
            return
        self._joined_finished = say_joined(store.crawl_id, status)
        self._refill()
        if (is_scrapy_redis_spider(self.spider)
                and self.crawler.settings.get("STATECRAWL_DEDUPE_START_REQUESTS") is None):
            # Its start requests are entries popped once from its key, i.e. URLs someone
            # pushed: fetched even if seen (dont_filter), as scrapy-redis does.
            self.dedupe_start_requests = False
        self._feed = StartUrlFeed.for_spider(self.crawler, self.spider, hungry=self._hungry,
                                             schedule=self._schedule_start)
        if self._feed is not None:
            self._feed.start()

    def _hungry(self) -> bool:
        """About to run out: few leased requests left and none of ours waiting to be committed."""
        return self._short() and not self.state.queued_requests and not self._closing

    def _schedule_start(self, request: Request) -> None:
        engine = self.crawler.engine
        if self._closing or engine is None or engine.spider is None:
            self.enqueue_request(request)  # stopping: committed with the last flush
        else:
            engine.crawl(request)

    async def _open_dupefilter(self) -> None:
        d = self.df.open()  # type: ignore[attr-defined]
        if d is not None:
            await maybe_deferred_to_future(d)

    def close(self, reason: str) -> Deferred[None]:
        return deferred_from_coro(self._close(reason))

    def _drain(self) -> None:
        """The engine is stopping: lease nothing more, give back what we hold, now.

        Requests already downloading may still finish here; their output is
        committed as usual (it is idempotent) and their acks are no-ops, since
        another worker may be fetching them already.
        """
        if self._draining is None:
            if self._feed is not None:
                self._feed.stop()
            self.state.stop.start()
            self._closing = True
            self._wakeup.set()  # the refill loop stops at its next step
            self._draining = asyncio.ensure_future(self._release_held())

    async def _release_held(self) -> None:
        task = self._refill_task
        if task is not None and not task.done():
            # Let a lease call in flight return, so what it leased is released
            # below; cancelling it would leave those leases to leave.lua.
            await asyncio.wait({task}, timeout=5)
            task.cancel()
        await self.state.wait_commit(self.state.stop.left(5))  # it may be leasing for us
        store = self.state.store
        held = [lease_id for lease_id, _ in self._buffer] + sorted(self._open_leases)
        self._buffer.clear()
        if store is None or not held or self.state.fatal_reason == "state_lost":
            return
        while True:
            try:
                released = await store.release(self.state.worker_id, held)
                break
            except RETRY_ERRORS as exc:
                if not is_transient(exc) or self.state.stop.passed():
                    logger.error("statecrawl: could not give %d leases back (%s); they go back "
                                 "when this worker is gone", len(held), exc)
                    return
                logger.warning("statecrawl: cannot release leases yet (%s); retrying", exc)
                await asyncio.sleep(0.5)
        self.crawler.stats.inc_value("statecrawl/released", released)
        logger.info("statecrawl: stopping; gave %d leased requests back to the frontier", released)

    async def _close(self, reason: str) -> None:
        self._count_local_dupes()
        self.state.stop.start()
        if self._feed is not None:  # a read in flight hands its requests over first
            await self._feed.wait_stopped(max(1.0, self.state.stop.left(5)))
        store = self.state.store
        if (reason == "finished" and self._joined_finished and store is not None
                and not self.crawler.stats.get_value("statecrawl/leased")):
            say_nothing_new(store.crawl_id)
        if store is not None:
            await self.state.flush()  # output first: acks of finished requests land
        self._drain()
        assert self._draining is not None
        await self._draining
        d = self.df.close(reason)  # type: ignore[attr-defined]
        if d is not None:
            await maybe_deferred_to_future(d)

    # -- the synchronous interface Scrapy calls ----------------------------------

    def has_pending_requests(self) -> bool:
        return bool(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)

    def enqueue_request(self, request: Request) -> bool:
        stats = self.crawler.stats
        if not self._redis_dedupe and not request.dont_filter:
            if self.df.request_seen(request):  # type: ignore[attr-defined]
                self.df.log(request, self.spider)  # type: ignore[attr-defined]
                return False
        # A request scheduled again under a lease this worker holds, for the same
        # URL (Scrapy's retry, a session rotation), is that page, not a new one:
        # it is never deduplicated as a start request (its original is "seen"),
        # and it does not count against the crawl's limit again.
        lease_id = request.meta.get(LEASE_META_KEY)
        again = lease_id is not None and self._open_leases.get(lease_id) == request.url
        start = bool(request.meta.get("is_start_request")) and not again
        filter_ = not request.dont_filter or (self.dedupe_start_requests and start)
        # a start request fetched even if seen is still recorded: links back to it are dupes
        record = start and not filter_ and self._redis_dedupe
        fp = self.crawler.request_fingerprinter.fingerprint(request)
        if filter_ and self._redis_dedupe:
            if fp in self._sent:
                self._local_dupes += 1  # most links are repeats: counted into stats in bulk
                return False
        host = host_of_url(request.url)  # packed in clear, and a crawl sharded by host routes on it
        try:
            body = self.state.codec.pack(
                request_to_json(request, self.spider, compact=True), request.url, host)
        except SerializationError as exc:
            logger.error("statecrawl: cannot schedule %s: %s", request, exc)
            stats.inc_value("statecrawl/request_unserializable")
            self.state.count("requests_unserializable")
            return False
        if (filter_ and self._redis_dedupe) or record:
            if len(self._sent) >= self._sent_max:
                self._sent.clear()
            self._sent.add(fp)
        aux = bool(request.meta.get("statecrawl_aux"))  # robots.txt, sitemaps: not pages
        self.state.add_request(
            PendingRequest(fp, filter_, -request.priority, body, counted=not (again or aux),
                           record=record, host=host))
        if request.meta.get("retry_times"):
            self.state.count("retried")
        self._finished = False
        stats.inc_value("scheduler/enqueued/redis")
        stats.inc_value("scheduler/enqueued")
        return True

    def next_request(self) -> Request | None:
        ready = self._buffer.pop_ready(time.time())
        if ready is None:
            if self._buffer:  # polite requests wait for their slots (statecrawl.frontier._buffer)
                self._buffer.call_when_due(lambda: wake(self.crawler.engine))
                if self._short():
                    self._refill()
                return None
            self._refill()
            if self._feed is not None:
                self._feed.poke()
            return None
        lease_id, request = ready
        if self._feed is not None and self._short():
            self._feed.poke()
        request.meta[LEASE_META_KEY] = lease_id
        self._open_leases[lease_id] = request.url
        self._open_since.setdefault(lease_id, time.monotonic())
        if self._short():
            self._refill()
        self.crawler.stats.inc_value("scheduler/dequeued/redis")
        self.crawler.stats.inc_value("scheduler/dequeued")
        return request
