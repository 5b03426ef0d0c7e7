"""The worker's side of the fleet-wide politeness budget (:mod:`statecrawl.frontier.hosts`).

:class:`PolitenessMiddleware` sits last before the downloader. It

* makes the crawl polite when this worker's settings ask for a budget (the
  first worker's budget is the crawl's; a later worker logs the crawl's);
* holds each request that came with a slot until the slot's time, and sends
  it only if it is not late by more than ``STATECRAWL_HOST_LATE`` and its host
  was not backed off meanwhile; otherwise it takes a new slot (a round trip,
  only then). :meth:`PolitenessMiddleware.hold` does it, called by
  statecrawl's download handler right before the download (the closest point
  to the wire), or by the middleware itself under any other handler;
* backs a host off fleet-wide on a 429 or 503 (``Retry-After`` honoured);
* reports, at most once a second, what it saw of each host: the latencies
  AutoThrottle's rule needs, and the answers that end a backoff.

Requests without a slot (a crawl that is not polite, robots.txt fetched by
Scrapy's middleware) pass untouched. A spider may ask for a budget of its own
with a ``host_budget`` attribute, ``{"delay": s, "concurrency": n}`` (the
``job`` spider does, from an API crawl's ``delay`` and ``maxConcurrency``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import time
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.utils.httpobj import urlparse_cached

from statecrawl.frontier._buffer import SLOT_META_KEY
from statecrawl.frontier.hosts import Budget, HostBudgetStore, RedisClock, budget_store
from statecrawl.frontier.redis_errors import retry_outage
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from statecrawl.frontier.store import CrawlStore

__all__ = ["SLOT_META_KEY", "PolitenessMiddleware", "hosts_of", "politeness_of"]

logger = logging.getLogger(__name__)


#: Answers that back a host off.
BACKOFF_CODES = (429, 503)
#: Seconds between two syncs of the worker's idea of the Redis clock (every 2 s
#: while it is known to no better than a millisecond).
CLOCK_SYNC_INTERVAL = 30.0
#: Slots a request may take before it is sent anyway (counted as ``polite_gave_up``).
MAX_SLOTS = 20


def retry_after(response: Response) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), or None."""
    raw = response.headers.get(b"Retry-After")
    if not raw:
        return None
    text = raw.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HostsOfCrawler:
    """What one worker knows of its crawl's hosts: the clock, backoffs, unreported answers."""

    def __init__(self) -> None:
        self.clock = RedisClock()
        self.backed_off: dict[str, float] = {}  # host -> local time its backoff ends
        # host -> local time its delay grew (robots.txt's Crawl-delay): slots granted
        # before it were spaced by the old delay, and are taken again
        self.rules_changed: dict[str, float] = {}
        self.seen: dict[str, list[float]] = {}  # host -> [answers, answers 200, latency sum]
        self.polite = False  # leases of this crawl carry slots
        self.store: HostBudgetStore | None = None


def hosts_of(crawler: Crawler) -> HostsOfCrawler:
    """The crawler's :class:`HostsOfCrawler` (shared by the scheduler and the middleware)."""
    hosts = getattr(crawler, "_statecrawl_hosts", None)
    if hosts is None:
        hosts = crawler._statecrawl_hosts = HostsOfCrawler()  # type: ignore[attr-defined]
    return hosts


def politeness_of(crawler: Crawler) -> PolitenessMiddleware | None:
    """The crawler's PolitenessMiddleware, if it has one."""
    return getattr(crawler, "_statecrawl_politeness", None)


class PolitenessMiddleware:
    """See the module docstring."""

    def __init__(self, crawler: Crawler, budget: Budget | None) -> None:
        self.crawler, self.budget = crawler, budget
        self.state = WorkerState.of(crawler)
        self.hosts = hosts_of(crawler)
        self._reporter: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # statecrawl's download handler (statecrawl.render.browser) holds each request
        # until its slot just before the download, after every middleware; any other
        # handler leaves that to this middleware.
        self.handler_holds = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PolitenessMiddleware:
        mw = cls(crawler, Budget.from_settings(crawler.settings))
        crawler._statecrawl_politeness = mw  # type: ignore[attr-defined]  # for the handler
        mw.state.open_hooks.append(mw._configure)  # before the worker's first lease
        # a polite crawl made by this worker, if sharded, is sharded by host (shards.py)
        mw.state.shard_by_host = mw.wants_budget
        crawler.signals.connect(mw.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(mw.spider_closed, signal=signals.spider_closed)
        return mw

    def wants_budget(self) -> bool:
        """Whether this worker brings a budget: its settings', or its spider's (an API job's)."""
        return self.budget is not None or bool(getattr(self.crawler.spider, "host_budget", None))

    @property
    def store(self) -> HostBudgetStore | None:
        return self.hosts.store

    @property
    def _limits(self) -> Budget:
        """This worker's late/backoff limits: its budget's, or the defaults."""
        return self.budget or Budget()

    async def _configure(self, store: CrawlStore) -> None:
        asked = getattr(self.crawler.spider, "host_budget", None)  # e.g. an API job's delay
        if asked:
            self.budget = dataclasses.replace(self.budget or Budget(), **asked)
        self.hosts.store = await budget_store(store, to_set=self.budget is not None)
        if self._on_message not in self.state.work_listeners:
            self.state.work_listeners.append(self._on_message)
        if self.budget is not None:
            delay, conc, horizon, target = await self.hosts.store.configure(self.budget)
            logger.info(
                "statecrawl: crawl %r is polite: one budget per host for the whole fleet: "
                "delay %.3gs, at most %s in flight, AutoThrottle %s (the crawl's budget, set by "
                "its first worker; change it with `statecrawl hosts`)", store.crawl_id, delay,
                conc or "any number", f"on (target {target:g})" if target else "off")
            self.hosts.polite = True
        else:
            self.hosts.polite = await self.hosts.store.is_polite()
        if self.hosts.polite:  # before the first lease: slots are read on this clock
            await self.hosts.clock.sync(store.client)

    def spider_opened(self, spider: Spider) -> None:
        if self.hosts.polite:
            self._start_polite()

    def _start_polite(self) -> None:
        """The crawl is polite: its leases carry slots."""
        self.hosts.polite = True
        if self._reporter is None:
            # Scrapy's per-process slot must never hold a request past its fleet slot.
            downloader = self.crawler.engine.downloader if self.crawler.engine else None
            if downloader is not None:
                downloader.domain_concurrency = max(downloader.domain_concurrency,
                                                    downloader.total_concurrency)
            self._reporter = asyncio.ensure_future(self._report_loop())

    async def spider_closed(self, spider: Spider) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        await self._report()

    # -- slots ------------------------------------------------------------------

    async def process_request(self, request: Request) -> None:
        slot = request.meta.get(SLOT_META_KEY)
        if slot is None:
            return
        if self._reporter is None:  # made polite by a worker that joined later
            self._start_polite()
        if not self.handler_holds:  # else the download handler holds it, closer to the wire
            await self.hold(request)

    async def hold(self, request: Request) -> None:
        """Wait for the request's slot; take a new one if it was missed or the host backed off."""
        slot = request.meta.pop(SLOT_META_KEY, None)
        if slot is None:
            return
        host, at, granted = slot
        clock = self.hosts.clock
        if not clock.synced and self.store is not None:  # a crawl made polite after we joined
            await clock.sync(self.store.client)
        # never early: the Redis clock is known to +-clock.error here
        at += clock.error
        stats = self.crawler.stats
        if granted < self.hosts.rules_changed.get(host, 0.0):
            at = await self._new_slot(host, "polite/delay_changed")
        for _ in range(MAX_SLOTS):
            if self.hosts.backed_off.get(host, 0.0) > at:
                at = await self._new_slot(host, "polite/backed_off")
                continue
            wait = at - time.time()
            if wait > 0:
                stats.inc_value("statecrawl/polite/waited")
                while (rest := at - time.time()) > 0:
                    await asyncio.sleep(rest)
            if self.hosts.backed_off.get(host, 0.0) > at:
                continue
            if time.time() - at <= self._limits.late:
                return
            at = await self._new_slot(host, "polite/late")
        stats.inc_value("statecrawl/polite/gave_up")
        logger.warning("statecrawl: %s missed %d slots of %s in a row; sending it now",
                       request.url, MAX_SLOTS, host)

    async def _new_slot(self, host: str, stat: str) -> float:
        self.crawler.stats.inc_value(f"statecrawl/{stat}")
        store = self.store
        assert store is not None
        at, _ = await retry_outage(f"taking a slot of {host}", lambda: store.slot(host), logger)
        return self.hosts.clock.local(at) + self.hosts.clock.error

    # -- what the host answered -------------------------------------------------

    def process_response(self, request: Request, response: Response) -> Response:
        if not self.hosts.polite or self.store is None:
            return response
        host = urlparse_cached(request).hostname or ""
        if response.status in BACKOFF_CODES:
            self._spawn(self._backoff(host, retry_after(response)))
            return response
        if self.budget is not None and self.budget.autothrottle or host in self.hosts.backed_off:
            seen = self.hosts.seen.setdefault(host, [0, 0, 0.0])
            seen[0] += 1
            seen[1] += response.status == 200
            seen[2] += float(request.meta.get("download_latency") or 0.0)
            if self.hosts.backed_off.get(host, 0.0) <= time.time():
                self.hosts.backed_off.pop(host, None)
        return response

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _backoff(self, host: str, after: float | None) -> None:
        assert self.store is not None
        limits = self._limits
        try:
            until, now, level = await self.store.backoff(host, after, limits.backoff,
                                                         limits.backoff_max)
        except RETRY_ERRORS as exc:
            logger.warning("statecrawl: could not back %s off in Redis (%s)", host, exc)
            return
        if until:
            self.crawler.stats.inc_value("statecrawl/polite/backoffs")
            self.hosts.backed_off[host] = self.hosts.clock.local(until)
            logger.info("statecrawl: %s answered 429/503 (%d in a row): no worker sends it a "
                        "request for %.1fs", host, level, (until - now) / 1000)

    def _on_message(self, kind: str) -> None:
        if not kind.startswith("backoff "):
            return
        _, host, until = kind.split(" ", 2)
        self.hosts.backed_off[host] = max(self.hosts.backed_off.get(host, 0.0),
                                          self.hosts.clock.local(int(until)))

    async def _report_loop(self) -> None:
        synced = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            await self._report()
            clock = self.hosts.clock
            every = CLOCK_SYNC_INTERVAL if clock.error <= clock.GOOD else 2.0
            if time.monotonic() - synced > every and self.store is not None:
                synced = time.monotonic()
                try:
                    await self.hosts.clock.sync(self.store.client)
                except RETRY_ERRORS as exc:
                    logger.debug("statecrawl: clock sync failed (%s)", exc)

    async def _report(self) -> None:
        seen, self.hosts.seen = self.hosts.seen, {}
        if not seen or self.store is None:
            return
        try:
            await self.store.observe(seen)
        except RETRY_ERRORS as exc:
            logger.debug("statecrawl: host report lost (%s)", exc)
