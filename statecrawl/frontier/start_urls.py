"""Start URLs pushed to a scrapy-redis spider's key, taken while the worker is busy.

scrapy-redis' ``RedisSpider`` / ``RedisCrawlSpider`` read their start key
(``redis_key``, ``REDIS_START_URLS_KEY``: a list, or a set with
``REDIS_START_URLS_AS_SET``, or a sorted set with
``REDIS_START_URLS_AS_ZSET``) only on ``spider_idle``: one batch of
``redis_batch_size`` (``CONCURRENT_REQUESTS``) each time the engine has
nothing at all to do. URLs pushed while the crawl runs wait for it to
drain, and a crawl fed only by pushed URLs runs in idle-sized gulps
(scrapy-redis issue #74).

:class:`StartUrlFeed`, run by statecrawl's scheduler for such a spider, also
takes a batch

* when the worker is about to run out of work -- its buffer of leased
  requests is short and no request of its own waits to be committed -- so a
  crawl fed by pushed URLs keeps every download slot busy; and
* every ``STATECRAWL_START_URLS_INTERVAL`` seconds (float, default ``1.0``;
  ``0`` turns the feed off, leaving scrapy-redis' idle reads only), so URLs
  pushed into a busy crawl join its frontier within that time, one bounded
  batch at a time.

It reads with the spider's own ``fetch_data`` (so list, set and sorted-set
keys behave as in scrapy-redis), in a thread: scrapy-redis' client is
blocking. Each entry becomes requests through the spider's
``make_request_from_data`` (plain URLs, or JSON with ``url``, ``meta``,
``method`` and form data), which go to the scheduler like any other. An
entry that fails to become a request is logged and counted
(``statecrawl/start_urls_failed``), not retried; ``statecrawl/start_urls``
counts the requests made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from statecrawl.frontier._scrapy_redis import is_scrapy_redis_spider
from statecrawl.frontier.redis_errors import Outage

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

__all__ = ["DEFAULT_INTERVAL", "StartUrlFeed"]

logger = logging.getLogger(__name__)

#: Default of ``STATECRAWL_START_URLS_INTERVAL``, in seconds.
DEFAULT_INTERVAL = 1.0


class StartUrlFeed:
    """Moves start URLs from a scrapy-redis spider's key into the crawl (module docstring)."""

    def __init__(self, crawler: Crawler, spider: Spider, *, interval: float,
                 hungry: Callable[[], bool], schedule: Callable[[Request], None]) -> None:
        self.crawler = crawler
        self.spider = spider
        self.interval = interval
        self._hungry = hungry
        self._schedule = schedule
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outage = Outage(logger, "reading start URLs from Redis")

    @classmethod
    def for_spider(cls, crawler: Crawler, spider: Spider, *, hungry: Callable[[], bool],
                   schedule: Callable[[Request], None]) -> StartUrlFeed | None:
        """A feed for *spider* if it is a scrapy-redis spider and the feed is on, else None."""
        interval = crawler.settings.getfloat("STATECRAWL_START_URLS_INTERVAL", DEFAULT_INTERVAL)
        if interval <= 0 or not is_scrapy_redis_spider(spider):
            return None
        return cls(crawler, spider, interval=interval, hungry=hungry, schedule=schedule)

    def start(self) -> None:
        if self._task is None:
            logger.info("statecrawl: taking start URLs from %r while busy too: every %.1fs and "
                        "when this worker runs low (batch %s)", getattr(self.spider, "redis_key"),
                        self.interval, self._batch())
            self._task = asyncio.ensure_future(self._run())

    def poke(self) -> None:
        """The worker runs low: take a batch now, if it is hungry."""
        self._poke.set()

    def stop(self) -> None:
        """Take nothing more; a read in flight still delivers (see :meth:`wait_stopped`)."""
        self._stopping = True
        self._poke.set()

    async def wait_stopped(self, timeout: float) -> None:
        """Wait, at most *timeout* s, for a read in flight to hand its requests over."""
        self.stop()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=timeout)
            self._task.cancel()

    def _batch(self) -> int:
        return max(1, int(getattr(self.spider, "redis_batch_size", None) or 16))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = float("-inf")  # loop time of the last read
        empty = False  # the last read found the key empty: wait out the interval
        while not self._stopping:
            due = last + self.interval - loop.time()
            if due > 0 and (empty or not self._hungry()):
                self._poke.clear()
                try:
                    await asyncio.wait_for(self._poke.wait(), due)
                except asyncio.TimeoutError:
                    pass
                continue
            last = loop.time()
            try:
                datas = await asyncio.to_thread(self._read)
            except (RedisError, OSError) as exc:
                self._outage.failed(exc, self.interval)
                empty = True
                continue
            self._outage.recovered()
            empty = not datas
            self._make(datas)
            await asyncio.sleep(0)  # let the scheduler hand the requests to its commit

    def _read(self) -> list[Any]:
        spider: Any = self.spider
        return list(spider.fetch_data(spider.redis_key, self._batch()) or ())

    def _make(self, datas: Iterable[Any]) -> None:
        spider: Any = self.spider
        stats = self.crawler.stats
        for data in datas:
            try:
                made = spider.make_request_from_data(data)
                requests = [made] if not isinstance(made, Iterable) else list(made)
            except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the feed
                logger.error("statecrawl: cannot make a request from start URL entry %.200r: "
                             "%s: %s", data, type(exc).__name__, exc)
                stats.inc_value("statecrawl/start_urls_failed")
                continue
            for request in requests:
                if request is not None:
                    request.meta.setdefault("is_start_request", True)  # as if from start()
                    self._schedule(request)
                    stats.inc_value("statecrawl/start_urls")
