"""A crawl-wide duplicate filter kept in Redis, exact or Bloom.

Enable it with ``DUPEFILTER_CLASS = "statecrawl.frontier.dupefilter.RedisDupeFilter"``
(the add-on does). Fingerprints come from ``crawler.request_fingerprinter``.
``STATECRAWL_DUPEFILTER`` picks the layout (keys in :mod:`statecrawl.frontier.keys`):

``exact`` (default)
    80 bits of each fingerprint in the crawl's ``digests`` hash: 65,536
    fields (the first 2 bytes), each a string of 8-byte remainders. Measured
    with ``MEMORY USAGE``: 11.7 bytes a URL at 1M URLs, 9.1 at 10M, about 9
    beyond, with no size limit (scrapy-redis' SET of hex fingerprints: 80;
    statecrawl's former SET of binary ones: 64). Exact up to an 80-bit
    collision: for a crawl of N URLs, a chance of about N^2 / 2^81 that two
    of them are ever confused (4e-13 at 1M, 4e-7 at 1G). An insert copies
    its field's string, about N / 8,192 bytes, so inserts slow down as the
    crawl grows (dupefilter alone, 2-core VM: 84k inserts/s at 1M URLs, 55k/s
    at 10M).
``bloom``
    A blocked Bloom filter in the crawl's ``bloom`` bitmap, sized for
    ``STATECRAWL_BLOOM_CAPACITY`` URLs at ``STATECRAWL_BLOOM_ERROR_RATE``
    (19.5 bits, 2.44 bytes, a URL at 1e-4; see :func:`bloom_parameters`) and
    preallocated when the crawl is created. All k bits of a URL lie in one
    4096-bit block, so a check reads 512 bytes with one GETRANGE instead of
    k bits with k commands (2.3x faster on repeats, 1.4x on inserts, for
    2% more bits).
    **A false positive skips a URL**: a new URL whose bits were all set by
    others is treated as seen and never fetched. The error rate holds up to
    the capacity and grows fast past it (for 1e-4: 0.3% at 1.5 times the
    capacity, 2% at twice). The expected number of such skips is kept in the
    crawl's stats (``bloom_estimated_false_skips``, shown by ``statecrawl
    status``) and in the Scrapy stat ``statecrawl/bloom_estimated_false_skips``.
    Redis bitmaps stop at 2^32 bits (512 MB): about 219M URLs at 1e-4. A crawl
    of *n* shards (:mod:`statecrawl.frontier.shards`) has a filter in each, sized
    for capacity / *n* (its share of the URLs: fingerprints spread evenly).

The crawl's first worker fixes its layout and Bloom parameters (in the
crawl's ``meta``): a worker whose settings differ logs a warning and uses the
crawl's, so all workers check the same filter. A crawl begun before these
layouts keeps its ``seen`` SET (mode ``set``).

With statecrawl's scheduler the check is not made here at all: the scheduler
reads :attr:`RedisDupeFilter.statecrawl_mode` and checks every request of a
commit batch inside the same Lua call that enqueues it, so check and enqueue
are one atomic step and a batch of links costs one round trip.

With another scheduler (Scrapy's own, say) Scrapy calls :meth:`request_seen`
synchronously for every request, and a synchronous Redis call would block the
reactor. So in that mode the filter uses the exact layout (same keys as the
``exact`` mode), loads the crawl's fingerprints when it opens, answers from
memory, and writes new fingerprints back in batches. That makes a crawl
resumable across runs, but two processes running at the same time can both
fetch a URL neither had seen: crawl-wide exactness needs statecrawl's
scheduler.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_from_coro

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.state import WorkerState
from statecrawl.frontier.store import script_source

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

    from statecrawl.frontier.store import CrawlStore

__all__ = [
    "BLOOM_BLOCK_BITS", "BLOOM_MAX_BITS", "DEFAULT_BLOOM_CAPACITY", "DEFAULT_BLOOM_ERROR_RATE",
    "DUPEFILTER_MODES", "FALSE_SKIPS_FIELD", "FALSE_SKIPS_STAT", "CrawlDupefilter",
    "RedisDupeFilter", "bloom_false_positive_rate", "bloom_parameters", "check_fingerprints",
    "open_crawl_dupefilter",
]

logger = logging.getLogger(__name__)

#: Values of ``STATECRAWL_DUPEFILTER``, the default first.
DUPEFILTER_MODES = ("exact", "bloom")

#: Defaults of ``STATECRAWL_BLOOM_CAPACITY`` and ``STATECRAWL_BLOOM_ERROR_RATE``.
DEFAULT_BLOOM_CAPACITY = 10_000_000
DEFAULT_BLOOM_ERROR_RATE = 1e-4

#: The largest Redis bitmap: strings stop at 512 MB.
BLOOM_MAX_BITS = 2**32

#: The Bloom filter is blocked: all k bits of a fingerprint in one block of this many bits.
BLOOM_BLOCK_BITS = 4096

#: The crawl stats field (``statecrawl status``) and the Scrapy stat of the
#: expected number of new URLs a Bloom filter skipped as false positives.
FALSE_SKIPS_FIELD = "bloom_estimated_false_skips"
FALSE_SKIPS_STAT = f"statecrawl/{FALSE_SKIPS_FIELD}"

_DIGEST_BYTES = 10  # bucket (2) + remainder (8) of the exact layout


def bloom_false_positive_rate(n: int, m: int, k: int) -> float:
    """The false-positive rate of the blocked Bloom filter holding *n* fingerprints.

    A block (4096 bits) holds j fingerprints with the Poisson probability
    P(j; n / blocks); a fresh fingerprint is then a false positive with
    probability (1 - (1 - 1/4096)^(kj))^k. (``dedupe_bloom.lua`` computes the
    same, for its estimate of false skips.)
    """
    blocks = m // BLOOM_BLOCK_BITS
    lam = n / blocks
    if lam <= 0:
        return 0.0
    spread = 12 * math.sqrt(lam) + 30
    log_miss = k * math.log1p(-1 / BLOOM_BLOCK_BITS)
    rate = 0.0
    for j in range(max(1, int(lam - spread)), int(lam + spread) + 1):
        p = math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1))
        rate += p * (-math.expm1(log_miss * j)) ** k
    return rate


def bloom_parameters(capacity: int, error_rate: float) -> tuple[int, int]:
    """Bits *m* and hash count *k* of a Bloom filter for *capacity* URLs at *error_rate*.

    k = round(ln(2) * -log2(p)), the optimum for rate p. m starts at the
    optimum of a plain Bloom filter, -n ln p / ln(2)^2 bits (19.2 bits a URL
    at 1e-4), and grows by whole 4096-bit blocks until the blocked filter,
    whose blocks fill unevenly, meets p at n = *capacity* (19.7 bits a URL at
    1e-4, 2.46 bytes). Raises ConfigError for values out of range, or when m
    would exceed Redis' 2^32-bit bitmaps.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ConfigError(f"STATECRAWL_BLOOM_CAPACITY must be a positive integer, not {capacity!r}")
    if not 0.0 < error_rate < 1.0:
        raise ConfigError(
            f"STATECRAWL_BLOOM_ERROR_RATE must be between 0 and 1 (exclusive), not {error_rate!r}")
    bits_per_url = -math.log(error_rate) / math.log(2) ** 2
    k = max(1, round(bits_per_url * math.log(2)))
    blocks = math.ceil(capacity * bits_per_url / BLOOM_BLOCK_BITS)
    max_blocks = BLOOM_MAX_BITS // BLOOM_BLOCK_BITS
    while blocks <= max_blocks and bloom_false_positive_rate(
            capacity, blocks * BLOOM_BLOCK_BITS, k) > error_rate:
        blocks += max(1, blocks // 256)
    if blocks > max_blocks:
        most = int(BLOOM_MAX_BITS / (blocks * BLOOM_BLOCK_BITS / capacity))
        raise ConfigError(
            f"a Bloom filter for STATECRAWL_BLOOM_CAPACITY={capacity:,} URLs at "
            f"STATECRAWL_BLOOM_ERROR_RATE={error_rate:g} needs over 512 MB, and a Redis bitmap "
            f"cannot exceed 512 MB: lower the capacity (to about {most:,} at this error rate), "
            f"raise the error rate, or use STATECRAWL_DUPEFILTER=exact"
        )
    return blocks * BLOOM_BLOCK_BITS, k


@dataclass(frozen=True, slots=True)
class CrawlDupefilter:
    """The dupefilter a crawl uses, as stored in its meta by its first worker."""

    mode: str  # "exact", "bloom" or "set" (a crawl begun before the compact layouts)
    capacity: int | None = None  # the bloom fields are None for the other modes
    error_rate: float | None = None
    m: int | None = None
    k: int | None = None


async def open_crawl_dupefilter(
    store: CrawlStore, mode: str, *, capacity: int = 0, error_rate: float = 0.0,
) -> CrawlDupefilter:
    """Fix the crawl's dupefilter to *mode* unless it has one; return the crawl's.

    For ``bloom``, *capacity* and *error_rate* size the filter when this call
    creates it; the bitmap is preallocated then. A sharded crawl has a filter per
    shard, each sized for its share of *capacity* (its ``m`` and ``k``: the filters'
    are alike), as the shards' share of the URLs is even.
    """
    shards = store.sharding.keys if store.sharding is not None else [store.keys]
    # a sharded crawl: a filter per shard, each for its share of the capacity
    share = -(-capacity // len(shards))
    m, k = bloom_parameters(share, error_rate) if mode == "bloom" else (0, 0)
    script = store.client.register_script(script_source("dedupe_init.lua"))
    outs = await asyncio.gather(*(store.run_checked(
        script, [k_.meta, k_.seen, k_.bloom, k_.stats],
        [mode, capacity, repr(error_rate), m, k, store.epoch or ""]) for k_ in shards))
    out = outs[0]
    stored = out[0].decode()
    if stored != "bloom":
        return CrawlDupefilter(stored)
    return CrawlDupefilter(stored, int(out[1]), float(out[2]), int(out[3]), int(out[4]))


async def check_fingerprints(
    store: CrawlStore, mode: str, fingerprints: Sequence[bytes], *, add: bool,
) -> int:
    """How many *fingerprints* the crawl's *mode* filter has not seen; records them if *add*.

    One Lua call (``dedupe_check.lua``), outside any commit: nothing is enqueued.
    """
    script = store.client.register_script(
        script_source("digests.lua", f"dedupe_{mode}.lua", "dedupe_check.lua"))
    return int(await script(keys=[store.keys.seen, store.keys.meta],
                            args=["1" if add else "0", *fingerprints]))


def _exact_digest(fingerprint: bytes) -> bytes:
    """The 80 bits the exact layout keeps (as dedupe_exact.lua computes them)."""
    if len(fingerprint) != 20:
        fingerprint = hashlib.sha1(fingerprint).digest()
    return fingerprint[:_DIGEST_BYTES]


class RedisDupeFilter:
    """Crawl-wide dupefilter, exact or Bloom (see the module docstring)."""

    #: Tells statecrawl's scheduler to check fingerprints in its commit script,
    #: with this layout (``dedupe_<mode>.lua``). Set per instance from the
    #: settings, then to the crawl's own layout when the filter opens.
    statecrawl_mode = "exact"

    def __init__(
        self, crawler: Crawler, *, mode: str = DUPEFILTER_MODES[0],
        bloom_capacity: int = DEFAULT_BLOOM_CAPACITY,
        bloom_error_rate: float = DEFAULT_BLOOM_ERROR_RATE, debug: bool = False,
    ) -> None:
        if mode not in DUPEFILTER_MODES:
            raise ConfigError(
                f"STATECRAWL_DUPEFILTER must be one of {', '.join(DUPEFILTER_MODES)}, not {mode!r}")
        if mode == "bloom":
            bloom_parameters(bloom_capacity, bloom_error_rate)  # refuse bad values now
        self.crawler = crawler
        self.statecrawl_mode = mode
        self.bloom_capacity = bloom_capacity
        self.bloom_error_rate = bloom_error_rate
        self.debug = debug
        self.fingerprinter = crawler.request_fingerprinter
        self.driven_by_scheduler = False  # set by statecrawl's scheduler
        self.crawl_filter: CrawlDupefilter | None = None  # the crawl's, once open
        self._seen: set[bytes] = set()
        self._unsaved: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisDupeFilter:
        s = crawler.settings
        return cls(
            crawler,
            mode=str(s.get("STATECRAWL_DUPEFILTER") or DUPEFILTER_MODES[0]).strip().lower(),
            bloom_capacity=s.getint("STATECRAWL_BLOOM_CAPACITY", DEFAULT_BLOOM_CAPACITY),
            bloom_error_rate=s.getfloat("STATECRAWL_BLOOM_ERROR_RATE", DEFAULT_BLOOM_ERROR_RATE),
            debug=s.getbool("DUPEFILTER_DEBUG"),
        )

    def open(self) -> Deferred[None] | None:
        if self.driven_by_scheduler:
            return deferred_from_coro(self._open_shared())
        return deferred_from_coro(self._load())

    async def _open_crawl(self, mode: str) -> tuple[CrawlStore, CrawlDupefilter]:
        store = await WorkerState.of(self.crawler).open()
        crawl = await open_crawl_dupefilter(
            store, mode, capacity=self.bloom_capacity, error_rate=self.bloom_error_rate)
        self.crawl_filter = crawl
        return store, crawl

    async def _open_shared(self) -> None:
        """With statecrawl's scheduler: adopt the crawl's layout for the commits."""
        mode = self.statecrawl_mode
        store, crawl = await self._open_crawl(mode)
        if crawl.mode != mode:
            logger.warning(
                "statecrawl: crawl %r uses the %r dupefilter (fixed by its first worker); "
                "this worker uses it too, not STATECRAWL_DUPEFILTER=%r",
                store.crawl_id, crawl.mode, mode)
        elif crawl.mode == "bloom" and (crawl.capacity, crawl.error_rate) != (
                self.bloom_capacity, self.bloom_error_rate):
            logger.warning(
                "statecrawl: crawl %r has a Bloom filter for %d URLs at error rate %g "
                "(m=%d bits, k=%d, fixed by its first worker); this worker uses it, not "
                "STATECRAWL_BLOOM_CAPACITY=%d, STATECRAWL_BLOOM_ERROR_RATE=%g",
                store.crawl_id, crawl.capacity, crawl.error_rate, crawl.m, crawl.k,
                self.bloom_capacity, self.bloom_error_rate)
        self.statecrawl_mode = crawl.mode
        WorkerState.of(self.crawler).dedupe_mode = crawl.mode
        if crawl.mode == "bloom":
            await self._report_false_skips()

    async def _load(self) -> None:
        """With another scheduler: the exact layout (or a crawl's old SET), loaded into memory."""
        if self.statecrawl_mode == "bloom":
            logger.warning("statecrawl: STATECRAWL_DUPEFILTER=bloom needs statecrawl's scheduler; "
                           "with this one the dupefilter uses the exact layout")
        store, crawl = await self._open_crawl("exact")
        if crawl.mode == "bloom":
            raise ConfigError(
                f"crawl {store.crawl_id!r} uses the bloom dupefilter, which works only with "
                f"statecrawl's scheduler (SCHEDULER = 'statecrawl.frontier.scheduler.Scheduler')")
        self.statecrawl_mode = crawl.mode
        if crawl.mode == "set":
            async for fp in store.client.sscan_iter(store.keys.seen, count=1000):
                self._seen.add(fp)
        else:
            async for bucket, packed in store.client.hscan_iter(store.keys.digests, count=100):
                for i in range(0, len(packed), 8):
                    self._seen.add(bucket + packed[i:i + 8])
        logger.info("statecrawl: loaded %d fingerprints of crawl %r", len(self._seen), store.crawl_id)

    def _local_key(self, fp: bytes) -> bytes:
        return fp if self.statecrawl_mode == "set" else _exact_digest(fp)

    def request_seen(self, request: Request) -> bool:
        fp = self.fingerprinter.fingerprint(request)
        key = self._local_key(fp)
        if key in self._seen:
            return True
        self._seen.add(key)
        self._unsaved.append(fp)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._save())
        return False

    async def _save(self) -> None:
        store = await WorkerState.of(self.crawler).open()
        while self._unsaved:
            batch, self._unsaved = self._unsaved[:1000], self._unsaved[1000:]
            await check_fingerprints(store, self.statecrawl_mode, batch, add=True)

    async def _report_false_skips(self) -> None:
        state = WorkerState.of(self.crawler)
        if state.store is None or state.client is None:
            return
        store = state.store
        keys = store.sharding.keys if store.sharding is not None else [store.keys]
        values = [await state.client.hget(k.stats, FALSE_SKIPS_FIELD) for k in keys]
        self.crawler.stats.set_value(FALSE_SKIPS_STAT, sum(int(v or 0) for v in values))

    def close(self, reason: str) -> Deferred[None] | None:
        if self.driven_by_scheduler:
            if self.statecrawl_mode != "bloom":
                return None
            return deferred_from_coro(self._report_false_skips())
        if self._writer is None:
            return None
        writer = self._writer
        return deferred_from_coro(asyncio.shield(writer))

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug:
            logger.debug("Filtered duplicate request: %(request)s", {"request": request})
        self.crawler.stats.inc_value("dupefilter/filtered")
