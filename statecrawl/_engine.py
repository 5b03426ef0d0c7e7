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

Both touch private attributes (``engine._slot``); this module is the only
place that does, and it fails loudly if a Scrapy release changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from statecrawl.exceptions import ConfigError

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.core.engine import ExecutionEngine

__all__ = ["on_stop", "wake", "watch_completed"]


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
