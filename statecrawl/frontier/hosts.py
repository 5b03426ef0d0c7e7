"""One politeness budget per host for the whole fleet.

Scrapy's ``DOWNLOAD_DELAY``, AutoThrottle and per-domain concurrency hold per
process: N workers give every site N times the load. In a *polite* crawl the
budget lives in Redis and is enforced where requests are leased, so it holds
however many workers run:

* **Where.** ``queue`` becomes the intake; each lease sorts what is in it into
  per-host queues (``hostq``) and serves the hosts of ``ready`` (host -> its
  next allowed time on the Redis clock) that are due within a short horizon,
  earliest first (``lua/polite.lua``). A host that is waiting is never looked
  at and never stalls another; leases and commits keep their one round trip.
* **Slots.** Each polite lease carries a *slot*: the time (Redis clock) its
  request may be sent. The host's next allowed time moves on by its delay at
  once, so the slots of one host are at least its delay apart across the
  fleet. :class:`~statecrawl.frontier.politeness.PolitenessMiddleware` holds
  the request until its slot (translated to the worker's clock by
  :class:`RedisClock`); a request that missed its slot by more than
  ``STATECRAWL_HOST_LATE`` (its worker was descheduled, the host backed off
  meanwhile) takes a new one (``lua/host_slot.lua``) instead of being sent.
  Slots are the delay plus ``STATECRAWL_HOST_LATE`` apart, so a request sent
  that late still leaves the whole delay before the next.
* **Delay** of a host: the largest of its override (``statecrawl hosts
  --delay``, ``STATECRAWL_HOST_BUDGETS``) or the crawl's delay
  (``STATECRAWL_HOST_DELAY``, else ``DOWNLOAD_DELAY``), robots.txt's
  ``Crawl-delay`` and, with AutoThrottle on, the delay AutoThrottle's rule
  computes from the latencies all workers report (``lua/host_observe.lua``).
* **Concurrency**: at most ``STATECRAWL_HOST_CONCURRENCY`` requests of a host
  leased at once, fleet-wide (0: no cap). ``CONCURRENT_REQUESTS_PER_DOMAIN``
  keeps Scrapy's per-process meaning; in a polite crawl each worker raises it
  to ``CONCURRENT_REQUESTS`` so that Scrapy's slot never delays a request past
  its fleet slot.
* **Backoff.** A 429 or 503 with ``Retry-After``, or the second in a row
  without, moves the host's next time past the wait for every worker and
  announces it on the frontier's channel (``lua/host_backoff.lua``).

The budget is the crawl's: the first worker's settings set it
(``lua/polite_config.lua``) and ``statecrawl hosts`` changes it while the crawl
runs. Keys: ``hostq``, ``ready``, ``hosts`` (:mod:`statecrawl.frontier.keys`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.shards import not_by_host, shard_of_host
from statecrawl.frontier.store import script_source

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy.settings import BaseSettings

    from statecrawl.frontier.store import CrawlStore

__all__ = ["Budget", "HostBudgetStore", "RedisClock", "budget_store", "parse_slot",
           "prepare_settings"]

#: polite_config.lua's crawl-wide fields (``*|d`` ... ``*|l``), first in its ARGV
_CRAWL_FIELDS = 7
#: The largest Crawl-delay honoured (s); robots.txt files asking for more get this.
MAX_CRAWL_DELAY = 60.0


def _mode(settings: BaseSettings) -> str:
    mode = str(settings.get("STATECRAWL_POLITENESS") or "auto").lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"STATECRAWL_POLITENESS must be auto, on or off, not {mode!r}")
    return mode


def prepare_settings(settings: BaseSettings) -> None:
    """The add-on's part: give ``DOWNLOAD_DELAY`` and AutoThrottle their fleet-wide meaning.

    Unless ``STATECRAWL_POLITENESS`` is ``off``, a ``DOWNLOAD_DELAY`` becomes
    the crawl's host delay (when ``STATECRAWL_HOST_DELAY`` is not set) and is
    zeroed for Scrapy's per-process slots, and Scrapy's AutoThrottle extension
    gives way to the fleet's (``STATECRAWL_AUTOTHROTTLE`` follows
    ``AUTOTHROTTLE_ENABLED`` unless set).
    """
    if _mode(settings) == "off":
        return
    delay = settings.getfloat("DOWNLOAD_DELAY")
    if delay > 0:
        priority = settings.getpriority("DOWNLOAD_DELAY") or 0
        if settings.get("STATECRAWL_HOST_DELAY") is None:
            settings.set("STATECRAWL_HOST_DELAY", delay, priority)
        settings.set("DOWNLOAD_DELAY", 0.0, priority)
    if settings.get("STATECRAWL_AUTOTHROTTLE") is None:
        settings.set("STATECRAWL_AUTOTHROTTLE", settings.getbool("AUTOTHROTTLE_ENABLED"), "addon")
    if settings.getbool("STATECRAWL_AUTOTHROTTLE"):
        from scrapy.extensions.throttle import AutoThrottle

        settings.set_in_component_priority_dict("EXTENSIONS", AutoThrottle, None)


def _overrides(settings: BaseSettings) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for host, conf in settings.getdict("STATECRAWL_HOST_BUDGETS").items():
        if not isinstance(conf, dict) or not set(conf) <= {"delay", "concurrency"}:
            raise ConfigError(f"STATECRAWL_HOST_BUDGETS[{host!r}] must be a dict with 'delay' "
                              "(s) and/or 'concurrency'")
        if "delay" in conf:
            out.append((str(host).lower(), "d", int(float(conf["delay"]) * 1000)))
        if "concurrency" in conf:
            out.append((str(host).lower(), "c", int(conf["concurrency"])))
    return out


@dataclass(frozen=True)
class Budget:
    """A worker's politeness settings (the crawl's budget, if it is the first worker)."""

    delay: float = 0.0  # s between two requests of one host, fleet-wide
    concurrency: int = 0  # requests of one host leased at once, fleet-wide; 0 = no cap
    horizon: float = 0.5  # a lease takes slots up to this far ahead
    late: float = 0.005  # a request later than its slot by more takes a new slot
    autothrottle: bool = False
    at_target: float = 1.0
    at_start: float = 5.0
    at_max: float = 60.0
    backoff: float = 1.0  # first wait after two 429/503 in a row without Retry-After
    backoff_max: float = 300.0
    overrides: list[tuple[str, str, int]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Budget | None:
        """The budget, or None when this worker asks for no politeness (the crawl may still be
        polite: then its leases carry slots all the same)."""
        mode = _mode(settings)
        if mode == "off":
            return None
        delay = settings.getfloat("STATECRAWL_HOST_DELAY") if settings.get(
            "STATECRAWL_HOST_DELAY") is not None else settings.getfloat("DOWNLOAD_DELAY")
        budget = cls(
            delay=max(0.0, delay),
            concurrency=max(0, settings.getint("STATECRAWL_HOST_CONCURRENCY")),
            horizon=max(0.05, settings.getfloat("STATECRAWL_HOST_HORIZON", 0.5)),
            late=max(0.0, settings.getfloat("STATECRAWL_HOST_LATE", 0.005)),
            autothrottle=settings.getbool("STATECRAWL_AUTOTHROTTLE"),
            at_target=max(0.1, settings.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY", 1.0)),
            at_start=settings.getfloat("AUTOTHROTTLE_START_DELAY", 5.0),
            at_max=settings.getfloat("AUTOTHROTTLE_MAX_DELAY", 60.0),
            backoff=max(0.0, settings.getfloat("STATECRAWL_HOST_BACKOFF", 1.0)),
            backoff_max=max(0.0, settings.getfloat("STATECRAWL_HOST_BACKOFF_MAX", 300.0)),
            overrides=_overrides(settings),
        )
        asked = (budget.delay > 0 or budget.concurrency > 0 or budget.autothrottle
                 or budget.overrides)
        return budget if mode == "on" or asked else None

    def config_args(self) -> list[Any]:  # the crawl's _CRAWL_FIELDS values, then overrides
        """ARGV of polite_config.lua."""
        args: list[Any] = [int(self.delay * 1000), self.concurrency, int(self.horizon * 1000),
                           self.at_target if self.autothrottle else 0, int(self.at_start * 1000),
                           int(self.at_max * 1000), int(self.late * 1000)]
        for host, name, value in self.overrides:
            args += [host, name, value]
        return args


class RedisClock:
    """The Redis clock on this worker's clock, NTP-style.

    :meth:`sync` asks Redis for ``TIME`` up to :attr:`SAMPLES` times (until a
    round trip under :attr:`GOOD`) and keeps
    the sample with the shortest round trip: Redis read its clock within that
    round trip, so the offset is known to half of it, however busy the
    worker's event loop was for the other samples. A new estimate replaces
    the last only when it is at least as sure, or the last is over
    :attr:`KEEP` seconds old (clocks drift).
    """

    SAMPLES = 50
    GOOD = 0.001  # a round trip this short ends the sampling
    KEEP = 120.0

    def __init__(self) -> None:
        self.offset = 0.0  # local time.time() - Redis time, s
        self.error = float("inf")  # half the round trip of the sample it comes from, s
        self._at = 0.0  # time.monotonic() of that sample

    async def sync(self, client: Redis) -> None:
        best: tuple[float, float] | None = None
        for _ in range(self.SAMPLES):
            sent = time.time()
            sec, usec = await client.time()
            back = time.time()
            sample = ((back - sent) / 2, (sent + back) / 2 - (sec + usec / 1e6))
            if best is None or sample[0] < best[0]:
                best = sample
            if best[0] * 2 <= self.GOOD:
                break
            await asyncio.sleep(0.002)  # a busy moment (a worker starting): try a later one
        assert best is not None
        if best[0] <= self.error or time.monotonic() - self._at > self.KEEP:
            self.error, self.offset = best
            self._at = time.monotonic()

    @property
    def synced(self) -> bool:
        return self.error != float("inf")

    def local(self, redis_ms: int) -> float:
        """A Redis time (ms) as a local ``time.time()``."""
        return redis_ms / 1000 + self.offset


def parse_slot(lease: str, clock: RedisClock) -> tuple[str, tuple[str, float, float] | None]:
    """A leased id as (request id, (host, local send time, local time granted) or None).

    A polite lease's id is ``"<id> <at> <now> <host>"`` (``lua/polite.lua``).
    """
    if " " not in lease:
        return lease, None
    parts = lease.split(" ", 3)
    at, now = int(parts[1]), int(parts[2])
    return parts[0], (parts[3] if len(parts) > 3 else "", clock.local(at), clock.local(now))


class HostBudgetStore:
    """The politeness scripts of one crawl (see the module docstring).

    A crawl sharded by host (:mod:`statecrawl.frontier.shards`) gives *shards*, the
    keys of each shard: a host's budget is then in its own shard, and the crawl's
    (``*|...``) in every one.
    """

    def __init__(self, client: Redis, keys: CrawlKeys,
                 shards: Sequence[CrawlKeys] | None = None) -> None:
        self.client, self.keys = client, keys
        self.shards = list(shards) if shards else [keys]
        self._config = client.register_script(script_source("polite_config.lua"))
        self._slot = client.register_script(script_source("polite.lua", "host_slot.lua"))
        self._backoff = client.register_script(script_source("polite.lua", "host_backoff.lua"))
        self._observe = client.register_script(script_source("host_observe.lua"))

    def shard(self, host: str) -> int:
        """The shard holding *host*'s budget and queue."""
        return shard_of_host(host, len(self.shards)) if len(self.shards) > 1 else 0

    def of(self, host: str) -> CrawlKeys:
        """The keys holding *host*'s budget and queue (its shard's)."""
        return self.shards[self.shard(host)]

    async def configure(self, budget: Budget) -> tuple[float, int, float, float]:
        """Make the crawl polite with *budget* unless it has a budget already; returns the
        crawl's (delay s, concurrency, horizon s, AutoThrottle target concurrency or 0)."""
        args = budget.config_args()
        base, overrides = args[:_CRAWL_FIELDS], args[_CRAWL_FIELDS:]
        by_shard: dict[int, list[Any]] = {}
        for i in range(0, len(overrides), 3):  # each host's override goes to its shard
            by_shard.setdefault(self.shard(overrides[i]), []).extend(overrides[i:i + 3])
        out = await self._config(keys=[self.keys.meta, self.keys.hosts],
                                 args=base + by_shard.get(0, []))
        crawl = ["" if v is None else v for v in out]  # shard 0's budget: every shard's
        await asyncio.gather(*(
            self._config(keys=[k.meta, k.hosts], args=crawl + by_shard.get(s, []))
            for s, k in enumerate(self.shards) if s))
        delay, conc, horizon, target = (float(v) if v is not None else 0.0 for v in out[:4])
        return delay / 1000, int(conc), horizon / 1000, target

    async def is_polite(self) -> bool:
        return await self.client.hget(self.keys.meta, "polite") in (b"1", "1")

    async def make_polite(self) -> None:
        """Make the crawl polite (every shard)."""
        for k in self.shards:
            await self.client.hset(k.meta, "polite", "1")

    async def slot(self, host: str) -> tuple[int, int]:
        """A new slot for *host*: (at, now), ms on the Redis clock."""
        k = self.of(host)
        at, now = await self._slot(keys=[k.hosts, k.ready], args=[host])
        return int(at), int(now)

    async def backoff(self, host: str, retry_after: float | None, base: float,
                      largest: float) -> tuple[int, int, int]:
        """Record a 429/503 of *host*; returns (backed off until or 0, now, answers in a row)."""
        retry = -1 if retry_after is None else int(retry_after * 1000)
        k = self.of(host)
        until, now, level = await self._backoff(
            keys=[k.hosts, k.ready, k.queue],
            args=[host, retry, int(base * 1000), int(largest * 1000)])
        return int(until), int(now), int(level)

    async def observe(self, seen: dict[str, list[float]]) -> None:
        """Report {host: [answers other than 429/503, answers 200, latency sum s]}."""
        args: dict[str, list[Any]] = {}  # by the key of each host's budget
        for host, (n, n200, latency) in seen.items():
            args.setdefault(self.of(host).hosts, []).extend(
                [host, int(n), int(n200), int(latency / max(n, 1) * 1000)])
        for key, shard_args in args.items():
            await self._observe(keys=[key], args=shard_args)

    async def crawl_delay(self, host: str, seconds: float) -> None:
        """robots.txt's Crawl-delay for *host* (at most :data:`MAX_CRAWL_DELAY`)."""
        ms = int(min(max(seconds, 0.0), MAX_CRAWL_DELAY) * 1000)
        await self.client.hset(self.of(host).hosts, f"{host}|r", ms)

    async def set_override(self, host: str, *, delay: float | None = None,
                           concurrency: int | None = None) -> None:
        """Change the budget of *host* (``*``: the crawl's) while the crawl runs."""
        mapping: dict[str, int] = {}
        if delay is not None:
            mapping[f"{host}|d"] = int(delay * 1000)
        if concurrency is not None:
            mapping[f"{host}|c"] = int(concurrency)
        for k in self.shards if host == "*" else [self.of(host)]:
            if mapping:
                await self.client.hset(k.hosts, mapping=mapping)  # type: ignore[arg-type]


async def budget_store(store: CrawlStore, *, to_set: bool = False) -> HostBudgetStore:
    """The budget store of *store*'s crawl: over its shards when it is sharded by host.

    With *to_set* (the caller would make the crawl polite), a crawl sharded by
    fingerprint is refused: ConfigError (:func:`statecrawl.frontier.shards.not_by_host`).
    """
    if store.sharding is not None:
        count, by_host = store.sharding.count, store.sharding.by_host
    else:
        shards, by = await store.client.hmget(store.keys.meta, ["shards", "shard_by"])
        count, by_host = int(shards or 1), by in (b"host", "host")
    if count > 1 and not by_host:
        if to_set:
            raise not_by_host(store.crawl_id, count)
        count = 1  # only read: its budget (none) is shard 0's
    keys = [CrawlKeys(store.crawl_id, s, count) for s in range(count)]
    return HostBudgetStore(store.client, keys[0], keys)
