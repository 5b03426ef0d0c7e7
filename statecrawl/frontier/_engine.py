"""The two places where statecrawl needs more from Scrapy's engine than its API gives.

1. *Completion*: a lease may be acknowledged only when its request has been
   fully processed (downloaded, callback run, items through the pipelines,
   new requests handed to the scheduler). Scrapy has no signal for that
   moment; the engine marks it by removing the request from its slot's
   ``inprogress`` set. :func:`watch_completed` wraps that set so the
   scheduler hears of each removal.
2. *Wake-up*: when leased requests arrive from Redis, the engine should ask
   the scheduler for them now, not at its next 5-second heartbeat.
   :func:`wake` schedules the engine's ``nextcall``, as ``engine.crawl()``
   does.
3. *Stop*: on SIGINT/SIGTERM Scrapy stops the engine, then waits for every
   in-flight download before it closes the scheduler. Leases should go back
   to the frontier at the start of that, not the end: :func:`on_stop` runs a
   callback when ``engine.stop_async()`` is called.
4. *Exit status*: ``scrapy crawl`` exits 1 only when a crawler failed to
   start; a worker that stops because Redis lost the crawl, or refuses it,
   must not exit 0 as if the crawl were done. :func:`fail_exit` makes the
   process exit 1 however the spider closes.

These touch private attributes (``engine._slot``) or Scrapy's conventions;
this module is the only place that does, and it fails loudly if a Scrapy
release changes them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from scrapy import signals

from statecrawl.exceptions import ConfigError

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.core.engine import ExecutionEngine
    from scrapy.crawler import Crawler

__all__ = ["fail_exit", "hangup_stops_gracefully", "on_stop", "wake", "watch_completed"]


class _NotifyingSet(set):  # type: ignore[type-arg]
    """A set that calls *on_remove* with each element removed by ``remove``."""

    def __init__(self, items: Iterable[Any], on_remove: Callable[[Any], None]) -> None:
        super().__init__(items)
        self._on_remove = on_remove

    def remove(self, element: Any) -> None:
        super().remove(element)
        self._on_remove(element)


def _slot(engine: ExecutionEngine) -> Any:
    slot = getattr(engine, "_slot", None)
    if slot is None or not isinstance(getattr(slot, "inprogress", None), set):
        raise ConfigError(
            "this Scrapy version's engine has no _slot.inprogress set; statecrawl's "
            "scheduler supports Scrapy 2.13-2.19"
        )
    return slot


def watch_completed(engine: ExecutionEngine, on_done: Callable[[Request], None]) -> None:
    """Call *on_done(request)* each time the engine finishes a request."""
    slot = _slot(engine)
    if not isinstance(slot.inprogress, _NotifyingSet):
        slot.inprogress = _NotifyingSet(slot.inprogress, on_done)


def wake(engine: ExecutionEngine | None) -> None:
    """Make the engine pull from the scheduler on the next loop iteration."""
    slot = getattr(engine, "_slot", None)
    if slot is not None and slot.closing is None:
        slot.nextcall.schedule()


def on_stop(engine: ExecutionEngine, callback: Callable[[], None]) -> None:
    """Call *callback* first thing when the engine is asked to stop."""
    original = engine.stop_async

    async def stop_async() -> None:
        callback()
        await original()

    engine.stop_async = stop_async  # type: ignore[method-assign]


def fail_exit(crawler: Crawler) -> None:
    """Make ``scrapy crawl`` exit with status 1 once this crawler has stopped.

    Scrapy's crawler processes set ``bootstrap_failed`` (and ``scrapy crawl``
    exits 1) when a finished crawler has no ``spider``. So the spider is
    taken off the crawler as late as possible: at ``engine_stopped``, the
    last signal, after every component has closed with it; or, when the
    engine never started (a spider closed while opening), at the end of
    ``spider_closed`` -- this handler is connected after every component's.
    """
    if getattr(crawler, "_statecrawl_fail_exit", False):
        return
    crawler._statecrawl_fail_exit = True  # type: ignore[attr-defined]

    def unset_spider() -> None:
        crawler.spider = None  # type: ignore[assignment]

    def on_spider_closed() -> None:
        engine = getattr(crawler, "_engine", None)
        if engine is None or not engine.running:
            unset_spider()

    crawler.signals.connect(unset_spider, signal=signals.engine_stopped, weak=False)
    crawler.signals.connect(on_spider_closed, signal=signals.spider_closed, weak=False)


def hangup_stops_gracefully() -> None:
    """Treat SIGHUP (the terminal closed) like SIGTERM: stop and give the leases back.

    Scrapy handles SIGINT and SIGTERM only; a hangup would kill the worker
    outright (its watchdog would still free its leases, but its buffered
    output would be lost and fetched again). Installed only from the main
    thread and only where nobody set a SIGHUP handler of their own.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if not hasattr(signal, "SIGHUP") or signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
        return

    def hangup(signum: int, frame: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGHUP, hangup)
