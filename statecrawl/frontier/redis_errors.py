"""Which Redis errors pass, and which do not: retry the first kind, never the second.

A worker keeps its output in memory while Redis is away and sends it again
(with the same token, so nothing is applied twice). That is right for an
outage -- a refused or cut connection, a timeout, a server still loading its
data, a failover in progress, a full memory that eviction or an operator can
free -- and wrong for an error that the same command will get every time: a
key of the wrong type, a Lua error, a value over Redis' size limits, a wrong
password. Retrying those forever is a hang that looks like work. So
:func:`is_transient` sorts them, and callers retry only what it accepts;
:class:`Outage` keeps the log to one line per outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.exceptions import RedisError as RedisErrorBase

__all__ = ["OPEN_OUTAGE_LIMIT", "Outage", "is_transient", "retry_outage"]

T = TypeVar("T")

#: Seconds a worker's start-up steps wait out an outage before giving up.
OPEN_OUTAGE_LIMIT = 30.0

#: Error replies that describe the server's state, not the command: they pass.
_TRANSIENT_REPLIES = ("OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN",
                      "CLUSTERDOWN", "NOREPLICAS", "MISCONF", "UNBLOCKED")


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying with backoff (outages), False for permanent ones."""
    if isinstance(exc, AuthenticationError):
        return False  # a ConnectionError in redis-py, but the same password fails again
    if isinstance(exc, (ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError,
                        TryAgainError, ClusterDownError, MasterDownError, OSError)):
        return True
    if isinstance(exc, ResponseError):
        word = str(exc).split(" ", 1)[0].upper()
        return word in _TRANSIENT_REPLIES
    return False  # any other RedisError is a refusal of this command


class Outage:
    """Log one line when an operation starts failing and one when it recovers."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException, retry_in: float) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning("statecrawl: %s failed (%s: %s); retrying with backoff (first "
                                "retry in %.1fs)", self.what, type(exc).__name__, exc, retry_in)

    def recovered(self) -> bool:
        """Call after a success; True if it ended an outage (and logs how long it was)."""
        if self.since is None:
            return False
        self.logger.warning("statecrawl: %s works again after %.1fs (%d failed attempts)",
                            self.what, time.monotonic() - self.since, self.failures)
        self.since, self.failures = None, 0
        return True


async def retry_outage(
    what: str, step: Callable[[], Awaitable[T]], logger: logging.Logger,
    limit: float = OPEN_OUTAGE_LIMIT,
) -> T:
    """Run *step*; through an outage, run it again with backoff for up to *limit* s.

    For idempotent steps (joining a crawl, opening its dupefilter). A
    permanent error, or an outage longer than *limit*, is raised.
    """
    loop = asyncio.get_running_loop()
    outage, backoff, deadline = Outage(logger, what), 0.1, loop.time() + limit
    while True:
        try:
            result = await step()
        except (RedisErrorBase, OSError) as exc:
            if not is_transient(exc) or loop.time() + backoff > deadline:
                raise
            outage.failed(exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            continue
        outage.recovered()
        return result
