"""Rolling counters: what a crawl did in each 10-second bucket of the last hour.

Any process can answer "pages/s over the last 1/5/15 minutes", for a crawl or
a host, from Redis alone. Workers write the counters inside the commits they
already make (``lua/commit.lua``): no round trip of their own.

* ``sc:{<id>}:ts:<bucket>`` (HASH, ``<bucket>`` = Redis' clock in seconds
  // :data:`BUCKET_SECONDS`), kept :data:`KEEP_SECONDS` after its last write.
  Fields:

  - written by the commit script from the commit itself: ``pages`` (leases
    acknowledged: pages done), ``items``, ``enqueued``, ``duplicates``;
  - counted by :class:`RollingCounters` on each fetch attempt and sent as
    ``ts:``-prefixed commit counters: ``s:2xx`` ... ``s:5xx`` (``s:other``),
    ``bytes`` (response bodies), ``lat:<le>`` (fetch latency histogram, the
    upper bounds of :data:`LATENCY_BOUNDS` seconds, ``lat:+Inf`` above),
    ``err:<exception class>`` (downloads that raised), ``ignored`` (requests
    a middleware dropped unfetched: robots.txt, ...), ``cb:<exception
    class>`` (callbacks that raised), and per host
    ``h:<host>:f`` (fetches) and ``h:<host>:e`` (errors and 5xx).

Reading (:func:`window`, :func:`rates`) sums the buckets of a window with one
pipelined round trip.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import signals
from scrapy.exceptions import IgnoreRequest, NotConfigured

from statecrawl.frontier.keys import CrawlKeys

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from statecrawl.frontier.state import WorkerState

__all__ = ["BUCKET_SECONDS", "KEEP_SECONDS", "LATENCY_BOUNDS", "RollingCounters", "rates",
           "rates_of", "read_buckets", "recent_keys", "window"]

BUCKET_SECONDS = 10
KEEP_SECONDS = 3600
#: Upper bounds (s) of the fetch latency histogram's buckets (Prometheus' ``le``).
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The commit counter prefix that sends a field to the current bucket, not the stats hash.
PREFIX = "ts:"


def latency_field(seconds: float) -> str:
    for bound in LATENCY_BOUNDS:
        if seconds <= bound:
            return f"lat:{bound:g}"
    return "lat:+Inf"


class RollingCounters:
    """Downloader middleware: counts each fetch attempt into the crawl's current bucket."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RollingCounters:
        if not crawler.settings.getbool("STATECRAWL_ROLLING_COUNTERS", True):
            raise NotConfigured("STATECRAWL_ROLLING_COUNTERS is off")
        from statecrawl.frontier.state import WorkerState

        middleware = cls(WorkerState.of(crawler))
        crawler.signals.connect(middleware.spider_error, signal=signals.spider_error)
        return middleware

    def _count(self, name: str, delta: int = 1) -> None:
        self.state.count(PREFIX + name, delta)

    def process_response(self, request: Request, response: Response,
                         spider: Spider | None = None) -> Response:
        status = response.status
        kind = f"{status // 100}xx" if 200 <= status < 600 else "other"
        host = _host(request.url)
        self._count("s:" + kind)
        self._count("bytes", len(response.body))
        self._count(f"h:{host}:f")
        if status >= 500:
            self._count(f"h:{host}:e")
        latency = request.meta.get("download_latency")
        if isinstance(latency, (int, float)) and math.isfinite(latency):
            self._count(latency_field(latency))
        return response

    def process_exception(self, request: Request, exception: BaseException,
                          spider: Spider | None = None) -> None:
        if isinstance(exception, IgnoreRequest):  # dropped before fetching (robots.txt, ...)
            self._count("ignored")
            return
        host = _host(request.url)
        self._count("err:" + type(exception).__name__)
        self._count(f"h:{host}:f")
        self._count(f"h:{host}:e")

    def spider_error(self, failure: Any, response: Any, spider: Spider) -> None:
        self._count("cb:" + getattr(failure.type, "__name__", "Exception"))


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "-"
    except ValueError:
        return "-"


async def read_buckets(client: Redis, keys: CrawlKeys, count: int, now: int | None = None,
                       shards: int = 1) -> tuple[int, int, list[dict[str, int]]]:
    """(the newest bucket's number, the seconds into it, the last *count* buckets, newest
    first), at Redis time *now* (s; read from Redis when None), in one round trip. A
    sharded crawl's commits count in each shard's buckets: *shards* of them are summed."""
    if now is None:
        now, _ = await client.time()
    last = int(now) // BUCKET_SECONDS
    async with client.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            for bucket in range(last, last - count, -1):
                pipe.hgetall(CrawlKeys(keys.crawl_id, shard, shards).rolling(bucket))
        raw = await pipe.execute()
    buckets: list[collections.Counter[str]] = [collections.Counter() for _ in range(count)]
    for i, fields in enumerate(raw):
        buckets[i % count].update({(k.decode() if isinstance(k, bytes) else k): int(v)
                                   for k, v in fields.items()})
    return last, int(now) % BUCKET_SECONDS + 1, [dict(b) for b in buckets]


def recent_keys(keys: CrawlKeys, now: float) -> list[str]:
    """The keys of every bucket that can still exist at Redis time *now* (s): the last hour's."""
    last = int(now) // BUCKET_SECONDS
    return [keys.rolling(b) for b in range(last, last - KEEP_SECONDS // BUCKET_SECONDS - 1, -1)]


def _count(seconds: int) -> int:
    return max(1, math.ceil(seconds / BUCKET_SECONDS))


async def window(client: Redis, keys: CrawlKeys, seconds: int) -> dict[str, int]:
    """Each field summed over the buckets of the last *seconds* (Redis' clock), the current
    (partial) bucket included."""
    _, _, buckets = await read_buckets(client, keys, _count(seconds))
    total: collections.Counter[str] = collections.Counter()
    for fields in buckets:
        total.update(fields)
    return dict(total)


async def rates(client: Redis, keys: CrawlKeys, windows: tuple[int, ...] = (60, 300, 900),
                field: str = "pages") -> dict[int, float]:
    """*field* (pages done) per second over each window (s), in one round trip. A window
    counts whole buckets plus the current one, and is divided by the time those cover."""
    _, into, buckets = await read_buckets(client, keys, max(_count(s) for s in windows))
    return rates_of(buckets, into, windows, field)


def rates_of(buckets: list[dict[str, int]], into: int, windows: tuple[int, ...] = (60, 300, 900),
             field: str = "pages") -> dict[int, float]:
    """:func:`rates` from buckets already read (newest first; *into*: seconds into the newest)."""
    out = {}
    for seconds in windows:
        n = _count(seconds)
        done = sum(fields.get(field, 0) for fields in buckets[:n])
        out[seconds] = done / ((n - 1) * BUCKET_SECONDS + into)
    return out
