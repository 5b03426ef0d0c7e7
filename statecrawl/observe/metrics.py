"""Prometheus metrics: the crawls of one Redis in the text exposition format, read on each scrape.

``statecrawl serve`` answers them at ``GET /metrics`` and ``statecrawl metrics`` is a
standalone exporter of the same text; both call :func:`exposition`. Nothing is kept
between scrapes: every scrape reads Redis (asyncio, pipelined), builds prometheus_client
metric families (:mod:`._families`, which lists every metric) and renders them from a
private ``CollectorRegistry`` -- never the process-global one, which would also carry
whatever else the process registered.

Which crawls (label ``crawl``): the members of ``sc:crawls`` whose meta ``state`` is not
``finished`` or ``cancelled``, those with a live worker, and those finished in the last
:data:`ENDED_SHOWN_FOR` seconds (so the last values of a crawl that just ended are
scraped); newest first, at most ``max_crawls`` (``STATECRAWL_METRICS_MAX_CRAWLS``); the
rest are counted in ``statecrawl_metrics_crawls_omitted``. ``statecrawl_crawls{state}``
counts every crawl. Per crawl, at most ``top_hosts`` hosts (``STATECRAWL_METRICS_TOP_HOSTS``):
by backlog in a polite crawl, else by fetches in the last minute. So the label sets stay
bounded whatever the Redis holds.

Errors: Redis not answering raises (the HTTP side answers 503: never an empty success);
a crawl whose keys cannot be read (a key of the wrong type, a stat that is not a number)
is skipped and counted in ``statecrawl_metrics_crawl_errors``. Nothing read from Redis
is executed or evaluated; values are parsed as numbers, labels escaped by prometheus_client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from redis.exceptions import ResponseError

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys, validate_crawl_id
from statecrawl.frontier.store import LIVE_WORKER_WINDOW, CrawlStore
from statecrawl.observe._families import Sheet, crawl_rows, crawls_rows, shown_state
from statecrawl.observe.snapshot import crawl_snapshot, redis_facts

__all__ = ["CONTENT_TYPE", "DEFAULT_MAX_CRAWLS", "DEFAULT_TOP_HOSTS", "ENDED_SHOWN_FOR",
           "MetricsLimits", "collect", "exposition", "render", "select_crawls"]

logger = logging.getLogger("statecrawl.metrics")

#: The classic text format, which generate_latest writes and every Prometheus reads (all
#: names here are legacy-valid: nothing needs the escaping of 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_CRAWLS = 50
DEFAULT_TOP_HOSTS = 10
#: A finished crawl keeps its series this many seconds after ``finished_at`` (Redis clock).
ENDED_SHOWN_FOR = 300.0
#: Crawls read at once (each is a few pipelined round trips on the shared client).
CONCURRENCY = 8
#: The errors of one crawl's data: skipped, counted, the scrape goes on. Connection
#: errors and timeouts are not among them: they end the scrape.
_DATA_ERRORS = (ResponseError, ValueError, TypeError, KeyError, AttributeError,
                UnicodeDecodeError)
_ENDED = frozenset({"finished", "cancelled"})


@dataclass(frozen=True)
class MetricsLimits:
    """How many crawls, and hosts per crawl, one scrape exports."""

    max_crawls: int = DEFAULT_MAX_CRAWLS
    top_hosts: int = DEFAULT_TOP_HOSTS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricsLimits:
        """``STATECRAWL_METRICS_MAX_CRAWLS`` and ``STATECRAWL_METRICS_TOP_HOSTS`` (unset or
        empty: the defaults); not a whole number >= 0: :class:`ConfigError`."""
        return cls(_count(env, "STATECRAWL_METRICS_MAX_CRAWLS", DEFAULT_MAX_CRAWLS),
                   _count(env, "STATECRAWL_METRICS_TOP_HOSTS", DEFAULT_TOP_HOSTS))


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r}: give a whole number >= 0 (default {default})")
    return int(raw)


@dataclass
class Selection:
    """The crawls a scrape exports, and what it knows of the others."""

    crawl_ids: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    omitted: int = 0
    errors: int = 0


def _text(value: bytes | str | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _number(value: bytes | str | None) -> float | None:
    try:
        return float(_text(value) or "")
    except ValueError:
        return None


async def select_crawls(client: Any, max_crawls: int) -> Selection:
    """The crawls to export (module docstring), and every crawl counted by state."""
    ids = []
    async for raw in client.sscan_iter(CRAWLS_KEY, count=1000):
        try:
            ids.append(validate_crawl_id(raw.decode()))
        except (ConfigError, UnicodeDecodeError):
            continue  # not a crawl id statecrawl wrote
    ids.sort()
    now_s, now_us = await client.time()
    now_ms = now_s * 1000 + now_us // 1000
    picked: list[tuple[bool, float, str]] = []
    out = Selection()
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        async with client.pipeline(transaction=False) as pipe:
            for cid in chunk:
                keys = CrawlKeys(cid)
                pipe.hmget(keys.meta, "state", "finished_at", "created_at")
                pipe.zcount(keys.workers, now_ms - int(LIVE_WORKER_WINDOW * 1000), "+inf")
            replies = await pipe.execute(raise_on_error=False)
        for cid, meta, live in zip(chunk, replies[::2], replies[1::2]):
            if isinstance(meta, Exception) or isinstance(live, Exception):
                out.errors += 1  # a meta or workers key of the wrong type
                continue
            raw_state, finished_at, created_at = meta
            if raw_state is None:
                continue  # expired with its API job, or deleted: gone
            state = _text(raw_state) or ""
            out.states[shown_state(state)] += 1
            ended = state in _ENDED
            done_at = _number(finished_at)
            recent = done_at is not None and now_s - done_at <= ENDED_SHOWN_FOR
            if not ended or live or recent:
                picked.append((ended, -(_number(created_at) or 0.0), cid))
    picked.sort()
    out.crawl_ids = [cid for _ended, _age, cid in picked[:max_crawls]]
    out.omitted = max(0, len(picked) - max_crawls)
    return out


async def _crawl(client: Any, crawl_id: str, top: int, gate: asyncio.Semaphore) -> list[Any] | None:
    """One crawl's rows, or None when its data cannot be read (logged)."""
    async with gate:
        try:
            snap = await crawl_snapshot(CrawlStore(client, crawl_id), top=top, dead=0,
                                        redis=False)
            return crawl_rows(snap)
        except _DATA_ERRORS as exc:
            logger.warning("metrics: crawl %r skipped, its data in Redis cannot be read: %s: %s",
                           crawl_id, type(exc).__name__, exc)
            return None


async def collect(client: Any, limits: MetricsLimits = MetricsLimits()) -> list[Metric]:
    """Read Redis once and build every metric family (raises when Redis does not answer)."""
    started = time.perf_counter()
    sheet = Sheet()
    facts = await redis_facts(client)
    chosen = await select_crawls(client, limits.max_crawls)
    gate = asyncio.Semaphore(CONCURRENCY)
    results = await asyncio.gather(*(_crawl(client, cid, limits.top_hosts, gate)
                                     for cid in chosen.crawl_ids))
    errors = chosen.errors
    exported = 0
    for rows in results:
        if rows is None:
            errors += 1
            continue
        try:
            crawl_sheet = Sheet()  # all of a crawl's rows, or none of them
            crawl_sheet.extend(rows)
        except (TypeError, ValueError) as exc:
            logger.warning("metrics: a crawl skipped, a value is not a number: %s", exc)
            errors += 1
            continue
        for name, found in crawl_sheet.rows.items():
            sheet.rows[name].extend(found)
        exported += 1
    sheet.extend(crawls_rows(chosen.states))
    sheet.add("statecrawl_redis_used_memory_bytes", facts["used_memory"])
    sheet.add("statecrawl_redis_ping_seconds", facts["ping_ms"] / 1000)
    sheet.add("statecrawl_redis_script_calls_total", facts["script_calls"])
    per_call = facts["script_usec_per_call"]
    sheet.add("statecrawl_redis_script_seconds_per_call",
              None if per_call is None else per_call / 1e6)
    sheet.add("statecrawl_metrics_crawls_exported", exported)
    sheet.add("statecrawl_metrics_crawls_omitted", chosen.omitted)
    sheet.add("statecrawl_metrics_crawl_errors", errors)
    sheet.add("statecrawl_metrics_scrape_duration_seconds", time.perf_counter() - started)
    return sheet.families()


class _Fixed(Collector):
    """A collector of families already built (the scrape read Redis before rendering)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def render(families: Iterable[Metric]) -> bytes:
    """The text exposition of *families*, from a registry of their own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)


async def exposition(client: Any, limits: MetricsLimits = MetricsLimits()) -> bytes:
    """:func:`collect` then :func:`render`: the body of a ``/metrics`` answer."""
    return render(await collect(client, limits))
