"""A crawl-wide duplicate filter kept in Redis.

Enable it with ``DUPEFILTER_CLASS = "statecrawl.dupefilter.RedisDupeFilter"``
(the add-on does). Fingerprints come from ``crawler.request_fingerprinter`` and
are stored as raw 20-byte digests in the crawl's ``seen`` set (see
:mod:`statecrawl.keys`).

With statecrawl's scheduler the check is not made here at all: the scheduler
sees ``statecrawl_mode = "set"`` and checks every request of a commit batch
inside the same Lua call that enqueues it, so check and enqueue are one atomic
step and a batch of links costs one round trip.

With another scheduler (Scrapy's own, say) Scrapy calls :meth:`request_seen`
synchronously for every request, and a synchronous Redis call would block the
reactor. So in that mode the filter loads the crawl's fingerprints when it
opens, answers from memory, and writes new fingerprints back in batches. That
makes a crawl resumable across runs, but two processes running at the same
time can both fetch a URL neither had seen: crawl-wide exactness needs
statecrawl's scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_from_coro

from statecrawl.state import WorkerState

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

__all__ = ["RedisDupeFilter"]

logger = logging.getLogger(__name__)


class RedisDupeFilter:
    """Exact crawl-wide dupefilter (see the module docstring)."""

    #: Tells statecrawl's scheduler to check fingerprints in its commit script.
    statecrawl_mode = "set"

    def __init__(self, crawler: Crawler, *, debug: bool = False) -> None:
        self.crawler = crawler
        self.debug = debug
        self.fingerprinter = crawler.request_fingerprinter
        self.driven_by_scheduler = False  # set by statecrawl's scheduler
        self._seen: set[bytes] = set()
        self._unsaved: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisDupeFilter:
        return cls(crawler, debug=crawler.settings.getbool("DUPEFILTER_DEBUG"))

    def open(self) -> Deferred[None] | None:
        if self.driven_by_scheduler:
            return None
        return deferred_from_coro(self._load())

    async def _load(self) -> None:
        store = await WorkerState.of(self.crawler).open()
        async for fp in store.client.sscan_iter(store.keys.seen, count=1000):
            self._seen.add(fp)
        logger.info("statecrawl: loaded %d fingerprints of crawl %r", len(self._seen), store.crawl_id)

    def request_seen(self, request: Request) -> bool:
        fp = self.fingerprinter.fingerprint(request)
        if fp in self._seen:
            return True
        self._seen.add(fp)
        self._unsaved.append(fp)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._save())
        return False

    async def _save(self) -> None:
        store = await WorkerState.of(self.crawler).open()
        while self._unsaved:
            batch, self._unsaved = self._unsaved, []
            await store.client.sadd(store.keys.seen, *batch)

    def close(self, reason: str) -> Deferred[None] | None:
        if self._writer is None:
            return None
        writer = self._writer
        return deferred_from_coro(asyncio.shield(writer))

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug:
            logger.debug("Filtered duplicate request: %(request)s", {"request": request})
        self.crawler.stats.inc_value("dupefilter/filtered")
