"""Who runs the finished-crawl sweep, and when (``STATECRAWL_FINISHED_TTL``).

The sweep itself -- and why it is a lazy sweep and not an ``EXPIRE`` -- is
:func:`statecrawl.frontier.lifecycle.sweep_finished`. It runs:

* when a worker starts: :class:`FinishedSweep`, a Scrapy extension the add-on
  wires in, in the background, its own crawl excluded, at most
  :data:`WORKER_SWEEP_TIMEOUT` seconds, never failing the worker;
* on ``statecrawl list`` (:mod:`statecrawl.cli.crawls`), before it lists;
* in every API process (``statecrawl serve``): :func:`sweep_every`, at start
  and then every :data:`API_SWEEP_INTERVAL` seconds.

Several sweepers at once are safe: ``purge_meta.lua`` lets one of them take
each crawl.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider, NotConfigured

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.lifecycle import PurgeResult, sweep_finished

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy.crawler import Crawler

__all__ = ["API_SWEEP_INTERVAL", "WORKER_SWEEP_TIMEOUT", "FinishedSweep", "finished_ttl", "sweep_every"]

logger = logging.getLogger(__name__)

WORKER_SWEEP_TIMEOUT = 60.0  #: seconds a worker's sweep may take before it is dropped
API_SWEEP_INTERVAL = 600.0  #: seconds between an API process's sweeps


def finished_ttl(value: Any) -> float:
    """``STATECRAWL_FINISHED_TTL`` in seconds; 0 (the default, also for None or "") keeps
    finished crawls for ever."""
    if value is None or value == "":
        return 0.0
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = -1.0
    if not ttl >= 0 or ttl == float("inf"):
        raise ConfigError(f"STATECRAWL_FINISHED_TTL={value!r}: give the seconds a finished crawl is "
                          "kept before it is purged, e.g. 604800 (7 days), or 0 to keep it")
    return ttl


def _log(purged: list[PurgeResult], ttl: float) -> None:
    if purged:
        logger.info("statecrawl: purged %d crawl%s finished more than %g s ago (%s): "
                    "%d keys, %d bytes", len(purged), "" if len(purged) == 1 else "s", ttl,
                    ", ".join(r.crawl_id for r in purged[:10]), sum(r.keys for r in purged),
                    sum(r.bytes for r in purged))


async def sweep_every(client: Redis, ttl: float, interval: float) -> None:
    """Sweep now and every *interval* seconds, until cancelled; a failed sweep is logged."""
    while True:
        try:
            _log(await sweep_finished(client, ttl), ttl)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # housekeeping: the next round tries again
            logger.warning("statecrawl: the sweep of finished crawls failed: %s", exc)
        await asyncio.sleep(interval)


class FinishedSweep:
    """Scrapy extension: when a worker starts, purge the crawls finished more than
    ``STATECRAWL_FINISHED_TTL`` seconds ago (not the worker's own), in the background.

    Raises NotConfigured when the setting is 0 (the default: finished crawls are kept)."""

    def __init__(self, crawler: Crawler, ttl: float) -> None:
        self.crawler, self.ttl = crawler, ttl
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FinishedSweep:
        ttl = finished_ttl(crawler.settings.get("STATECRAWL_FINISHED_TTL"))
        if not ttl:
            raise NotConfigured("STATECRAWL_FINISHED_TTL is 0: finished crawls are kept")
        ext = cls(crawler, ttl)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self) -> None:
        self._task = asyncio.ensure_future(self._sweep())

    def spider_closed(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _sweep(self) -> None:
        from statecrawl.frontier.state import WorkerState

        try:
            store = await WorkerState.of(self.crawler).open()
            purged = await asyncio.wait_for(
                sweep_finished(store.client, self.ttl, exclude={store.crawl_id}),
                WORKER_SWEEP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except CloseSpider:
            return  # the worker could not join its crawl, and has said why
        except Exception as exc:  # a sweep is housekeeping: it never stops a worker
            logger.warning("statecrawl: the sweep of finished crawls failed: %s", exc)
            return
        _log(purged, self.ttl)
