"""``spider.state`` checkpointed to Redis, so a spider's cursors survive its worker.

Scrapy's convention for state a spider keeps across runs is ``spider.state``,
a dict that its ``SpiderState`` extension pickles into ``JOBDIR`` at close.
A SIGKILLed worker never closes, and its JOBDIR is on a machine that may be
gone. :class:`SpiderStateCheckpoint` (enabled by the add-on) keeps the same
convention with the crawl's Redis instead:

* at spider open, ``spider.state`` is loaded from ``sc:{id}:spider_state``
  (before ``start()`` runs, so a cursor read there resumes). A checkpoint
  that cannot be read back (not JSON, not an object, or nothing a checkpoint
  could save again) is moved to the crawl's dead-letter list and the spider
  starts with an empty state, logged at ERROR
  (:meth:`~statecrawl.sessions.store.SessionStore.load_spider_state`);
* every ``STATECRAWL_CHECKPOINT_INTERVAL`` seconds (default 5), if it
  changed, it is saved; and once more at close. JSON only (``dumps`` refuses
  anything else, loudly), sealed with ``STATECRAWL_SECRET_KEY`` if set: a
  spider's state may hold tokens.
* A checkpoint never runs ahead of the items: the state is snapshotted, then
  the checkpoint waits until no item handed to the pipelines is still in
  them and the worker's pending writes are committed, then stores the
  snapshot. A spider that moves its cursor *after* yielding the items the
  cursor covers therefore never resumes past an item that is not in Redis.
  After a SIGKILL it resumes from the last checkpoint: at most one interval
  of work is done again (items are stored by URL, so none is duplicated).

Saving is a few JSON bytes and one ``SET`` on the asyncio loop; the reactor
never waits for it (``bench/sessions.py`` measures it).

With several workers in one crawl there is one ``spider.state`` per crawl:
the last checkpoint wins, so keep there what one worker owns (a cursor
walked by one worker), not counters every worker adds to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.serialize import dumps
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

    from statecrawl.sessions.hub import Sessions

__all__ = ["SpiderStateCheckpoint"]

logger = logging.getLogger(__name__)

#: The default of ``STATECRAWL_CHECKPOINT_INTERVAL`` (seconds).
DEFAULT_INTERVAL = 5.0


class SpiderStateCheckpoint:
    """Load ``spider.state`` from Redis at open; save it periodically and at close."""

    def __init__(self, crawler: Crawler, sessions: Sessions, interval: float) -> None:
        self.crawler = crawler
        self.sessions = sessions
        self.interval = interval
        self.spider: Spider | None = None
        self._saved: bytes | None = None  # the JSON last stored
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._warned = False
        crawler.signals.connect(self._opened, signal=signals.spider_opened)
        sessions.before_close.append(self._final)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SpiderStateCheckpoint:
        from statecrawl.sessions.hub import Sessions

        interval = crawler.settings.getfloat("STATECRAWL_CHECKPOINT_INTERVAL", DEFAULT_INTERVAL)
        if interval < 0:
            raise NotConfigured("STATECRAWL_CHECKPOINT_INTERVAL is negative")
        return cls(crawler, Sessions.of(crawler), interval)

    async def _opened(self, spider: Spider) -> None:
        self.spider = spider
        store = await self.sessions.open()
        state = getattr(spider, "state", None)
        if not isinstance(state, dict):
            state = spider.state = {}  # type: ignore[attr-defined]
        saved = await store.load_spider_state()
        if saved:
            state.update(saved)
            # keys only: a spider's state may hold tokens, which stay out of logs
            logger.info("statecrawl: spider.state restored from the last checkpoint (keys: %s)",
                        ", ".join(sorted(saved)))
            self.crawler.stats.set_value("statecrawl/checkpoint_restored", 1)
        self._saved = self._snapshot()
        if self.interval > 0:
            self._task = asyncio.ensure_future(self._loop())

    def _snapshot(self) -> bytes | None:
        state = getattr(self.spider, "state", None)
        try:
            return dumps(state if isinstance(state, dict) else {}, "spider.state")
        except SerializationError as exc:
            if not self._warned:
                self._warned = True
                logger.error("statecrawl: spider.state cannot be checkpointed: %s", exc)
            self.crawler.stats.inc_value("statecrawl/checkpoint_unserializable")
            return None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.save(settle=self.interval)
            except RETRY_ERRORS as exc:
                logger.warning("statecrawl: checkpoint failed (%s); retrying next interval", exc)

    async def _items_settled(self, timeout: float) -> bool:
        """Wait until no item is inside the item pipelines (at most *timeout* s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            scraper = getattr(self.crawler.engine, "scraper", None)
            slot = getattr(scraper, "slot", None)
            if slot is None or not slot.itemproc_size:
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)

    async def save(self, *, settle: float = 5.0) -> int:
        """Checkpoint now if ``spider.state`` changed; returns bytes stored (0: nothing to do)."""
        async with self._lock:
            snapshot = self._snapshot()
            if snapshot is None or snapshot == self._saved:
                return 0
            if not await self._items_settled(settle):
                self.crawler.stats.inc_value("statecrawl/checkpoint_deferred")
                return 0  # items of this state are still in the pipelines: next time
            await WorkerState.of(self.crawler).flush()
            store = await self.sessions.open()
            nbytes = await store.save_spider_state(snapshot)
            self._saved = snapshot
            stats = self.crawler.stats
            stats.inc_value("statecrawl/checkpoints")
            stats.set_value("statecrawl/checkpoint_bytes", nbytes)
            return nbytes

    async def _final(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.spider is not None:
            await self.save(settle=5.0)
