"""The dupefilter layouts: exact (compact digests) and Bloom, in the commit script and end to end."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.test import get_crawler

from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.dupefilter import (
    BLOOM_BLOCK_BITS,
    CrawlDupefilter,
    RedisDupeFilter,
    bloom_false_positive_rate,
    bloom_parameters,
    check_fingerprints,
    open_crawl_dupefilter,
)
from statecrawl.frontier.item_codec import load_item
from statecrawl.frontier.store import CrawlStore, PendingRequest
from tests.conftest import RedisServer, scrapy_crawl, worker_env
from tests.conftest import run_store as run
from tests.test_components import runspider


def digests(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(20) for _ in range(n)]


def reqs(fps: list[bytes]) -> list[PendingRequest]:
    return [PendingRequest(fp, True, 0, b"{}") for fp in fps]


async def commit_all(store: CrawlStore, mode: str, fps: list[bytes], batch: int = 1000) -> tuple[int, int]:
    """Commit *fps* in batches, emptying the frontier after each; (enqueued, duplicates)."""
    enqueued = duplicates = 0
    for i in range(0, len(fps), batch):
        result = await store.commit("w", dedupe=mode, requests=reqs(fps[i:i + batch]))
        enqueued += result.enqueued
        duplicates += result.duplicates
        await store.client.delete(store.keys.queue, store.keys.reqs, store.keys.fifo,
                                  store.keys.fifo_list(0))
    return enqueued, duplicates


# -- exact ------------------------------------------------------------------------------


def test_exact_layout_is_exact(redis_url: str, crawl_id: str) -> None:
    fps = digests(20_000, seed=1)

    async def body(store: CrawlStore) -> None:
        assert await open_crawl_dupefilter(store, "exact") == CrawlDupefilter("exact")
        # repeats within one batch, then everything again across batches
        first = await store.commit("w", dedupe="exact", requests=reqs(fps[:500] + fps[:500]))
        assert (first.enqueued, first.duplicates) == (500, 500)
        assert await commit_all(store, "exact", fps) == (19_500, 500)
        assert await commit_all(store, "exact", fps) == (0, 20_000)
        assert await check_fingerprints(store, "exact", digests(5000, seed=2), add=False) == 5000
        # the layout: 8 bytes a fingerprint in at most 65,536 fields
        client, k = store.client, store.keys
        assert await client.hlen(k.digests) <= 65_536
        total = 0
        async for _, packed in client.hscan_iter(k.digests, count=1000):
            total += len(packed)
        assert total == 8 * 20_000
        assert int(await client.hget(k.stats, "seen")) == 20_000
        assert not await client.exists(k.seen, k.bloom)

    run(redis_url, crawl_id, body)


def test_exact_matches_only_whole_remainders(redis_url: str, crawl_id: str) -> None:
    bucket, tail = b"\x00\x01", b"T" * 10
    a, b = bucket + b"abcdefgh" + tail, bucket + b"ijklmnop" + tail
    straddling = bucket + b"cdefghij" + tail  # found in "abcdefghijklmnop", off a boundary
    kept_bits_only = bucket + b"abcdefgh" + b"U" * 10  # differs after the 80 kept bits

    async def body(store: CrawlStore) -> tuple[int, int, int]:
        await store.commit("w", dedupe="exact", requests=reqs([a, b]))
        assert await store.client.hget(store.keys.digests, bucket) == b"abcdefghijklmnop"
        off_boundary = await store.commit("w", dedupe="exact", requests=reqs([straddling]))
        same_80_bits = await store.commit("w", dedupe="exact", requests=reqs([kept_bits_only]))
        again = await store.commit("w", dedupe="exact", requests=reqs([a, b]))
        return off_boundary.enqueued, same_80_bits.duplicates, again.duplicates

    assert run(redis_url, crawl_id, body) == (1, 1, 2)


def test_exact_hashes_fingerprints_of_other_lengths(redis_url: str, crawl_id: str) -> None:
    # 32 bytes sharing their first 10: all one digest if they were not hashed first
    long_fps = [b"P" * 10 + hashlib.sha256(str(i).encode()).digest()[:22] for i in range(300)]
    short_fps = [str(i).encode() for i in range(300)]

    async def body(store: CrawlStore) -> tuple[tuple[int, int], tuple[int, int]]:
        first = await commit_all(store, "exact", long_fps + short_fps)
        return first, await commit_all(store, "exact", long_fps + short_fps)

    assert run(redis_url, crawl_id, body) == ((600, 0), (0, 600))


def test_a_crawl_with_a_seen_set_keeps_it(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[CrawlDupefilter, int]:
        old = hashlib.sha1(b"old").digest()
        await store.client.sadd(store.keys.seen, old)  # begun before the compact layouts
        crawl = await open_crawl_dupefilter(store, "exact")
        result = await store.commit("w", dedupe=crawl.mode, requests=reqs([old]))
        return crawl, result.duplicates

    assert run(redis_url, crawl_id, body) == (CrawlDupefilter("set"), 1)


# -- bloom --------------------------------------------------------------------------------


def test_bloom_parameters() -> None:
    m, k = bloom_parameters(10_000_000, 1e-4)
    assert k == 13 and m % BLOOM_BLOCK_BITS == 0
    assert 19.17 < m / 10_000_000 < 20  # bits a URL: <= 2.5 bytes
    assert bloom_false_positive_rate(10_000_000, m, k) <= 1e-4
    assert bloom_false_positive_rate(10_000_000, m - 64 * BLOOM_BLOCK_BITS, k) > 1e-4
    assert bloom_parameters(20_000, 1e-4) == (393_216, 13)
    assert bloom_parameters(100_000, 1e-2)[1] == 7
    assert bloom_parameters(1, 0.5) == (BLOOM_BLOCK_BITS, 1)


@pytest.mark.parametrize("capacity, error_rate, message", [
    (300_000_000, 1e-4, "cannot exceed 512 MB"),
    (0, 1e-4, "STATECRAWL_BLOOM_CAPACITY must be a positive integer"),
    (1000, 0.0, "STATECRAWL_BLOOM_ERROR_RATE must be between 0 and 1"),
    (1000, 1.5, "STATECRAWL_BLOOM_ERROR_RATE must be between 0 and 1"),
])
def test_bad_bloom_settings_are_config_errors(capacity: int, error_rate: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bloom_parameters(capacity, error_rate)
    crawler = get_crawler(settings_dict={
        "STATECRAWL_DUPEFILTER": "bloom", "STATECRAWL_BLOOM_CAPACITY": capacity,
        "STATECRAWL_BLOOM_ERROR_RATE": error_rate,
    })
    with pytest.raises(ConfigError, match=message):
        RedisDupeFilter.from_crawler(crawler)


def test_dupefilter_setting() -> None:
    def mode(**settings: Any) -> str:
        return RedisDupeFilter.from_crawler(get_crawler(settings_dict=settings)).statecrawl_mode

    assert mode() == "exact"
    assert mode(STATECRAWL_DUPEFILTER="Bloom") == "bloom"
    with pytest.raises(ConfigError, match="STATECRAWL_DUPEFILTER must be one of exact, bloom"):
        mode(STATECRAWL_DUPEFILTER="cuckoo")


def test_bloom_is_preallocated_and_its_parameters_stored(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        client, k = store.client, store.keys
        crawl = await open_crawl_dupefilter(store, "bloom", capacity=20_000, error_rate=1e-4)
        assert crawl == CrawlDupefilter("bloom", 20_000, 1e-4, 393_216, 13)
        assert await client.strlen(k.bloom) == 393_216 // 8
        assert await client.bitcount(k.bloom) == 0
        meta = await client.hgetall(k.meta)
        assert meta[b"dupefilter"] == b"bloom" and meta[b"bloom_m"] == b"393216"
        assert (await store.status())["stats"]["bloom_estimated_false_skips"] == 0
        fp = hashlib.sha1(b"x").digest()
        assert (await store.commit("w", dedupe="bloom", requests=reqs([fp]))).enqueued == 1
        assert await client.bitcount(k.bloom) == 13  # distinct positions for this one
        # opening again (another worker) neither resizes nor clears it
        assert await open_crawl_dupefilter(store, "bloom", capacity=20_000, error_rate=1e-4) == crawl
        assert await client.strlen(k.bloom) == 393_216 // 8
        assert (await store.commit("w", dedupe="bloom", requests=reqs([fp]))).duplicates == 1

    run(redis_url, crawl_id, body)


def test_bloom_check_and_set_within_a_batch(redis_url: str, crawl_id: str) -> None:
    fps = digests(3000, seed=3)

    async def body(store: CrawlStore) -> None:
        await open_crawl_dupefilter(store, "bloom", capacity=100_000, error_rate=1e-4)
        batch = fps + fps[:1000] + fps[2000:]  # repeats later in the same call
        result = await store.commit("w", dedupe="bloom", requests=reqs(batch))
        assert (result.enqueued, result.duplicates) == (3000, 2000)
        assert await commit_all(store, "bloom", fps) == (0, 3000)
        assert int(await store.client.hget(store.keys.stats, "seen")) == 3000
        # dont_filter requests bypass it
        again = await store.commit("w", dedupe="bloom", requests=[PendingRequest(fps[0], False, 0, b"{}")])
        assert again.enqueued == 1

    run(redis_url, crawl_id, body)


def test_other_workers_settings_yield_to_the_stored_ones(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        first = await open_crawl_dupefilter(store, "bloom", capacity=20_000, error_rate=1e-4)
        fp = hashlib.sha1(b"a").digest()
        await store.commit("w1", dedupe=first.mode, requests=reqs([fp]))
        other = await open_crawl_dupefilter(store, "bloom", capacity=5_000_000, error_rate=1e-2)
        assert other == first
        assert await store.client.strlen(store.keys.bloom) == first.m // 8  # type: ignore[operator]
        assert await open_crawl_dupefilter(store, "exact") == first
        result = await store.commit("w2", dedupe=other.mode, requests=reqs([fp]))
        assert result.duplicates == 1

    run(redis_url, crawl_id, body)


@pytest.mark.parametrize("error_rate", [1e-2, 1e-3, 1e-4])
def test_bloom_false_positive_rate_at_capacity(redis_url: str, crawl_id: str, error_rate: float) -> None:
    capacity = 20_000
    fps, fresh = digests(capacity, seed=4), digests(200_000, seed=5)

    async def body(store: CrawlStore) -> tuple[int, int, float]:
        crawl = await open_crawl_dupefilter(store, "bloom", capacity=capacity, error_rate=error_rate)
        _, skipped = await commit_all(store, "bloom", fps)
        new = 0
        for i in range(0, len(fresh), 5000):
            new += await check_fingerprints(store, "bloom", fresh[i:i + 5000], add=False)
        estimate = int(await store.client.hget(store.keys.stats, "bloom_estimated_false_skips"))
        assert int(await store.client.hget(store.keys.stats, "seen")) == capacity - skipped
        assert crawl.m is not None and crawl.k is not None
        expected = bloom_false_positive_rate(capacity, crawl.m, crawl.k)
        assert expected <= error_rate
        rate = 1 - new / len(fresh)
        assert error_rate / 2 <= rate <= 2 * error_rate, rate
        return skipped, estimate, rate

    skipped, estimate, _ = run(redis_url, crawl_id, body)
    # the skips while filling up are what the crawl's estimate predicts (a few at 1e-2)
    assert abs(skipped - estimate) <= 3 + 0.5 * estimate, (skipped, estimate)


def test_uninitialised_bloom_is_an_error_not_a_silent_pass(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        from redis.exceptions import ResponseError

        with pytest.raises(ResponseError, match="bloom dupefilter of this crawl is not initialised"):
            await store.commit("w", dedupe="bloom", requests=reqs(digests(1, seed=6)))

    run(redis_url, crawl_id, body)


# -- end to end ------------------------------------------------------------------------------


def crawl_site(server: RedisServer, site: DemoSite, crawl_id: str, out: Path, *settings: str) -> str:
    args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "LOG_LEVEL=INFO"]
    for s in settings:
        args += ["-s", s]
    result = scrapy_crawl(args, worker_env(server.url, out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return str(result.stderr)


def test_bloom_crawl_end_to_end(redis_server: RedisServer, site: DemoSite, crawl_id: str,
                                tmp_path: Path) -> None:
    log = crawl_site(redis_server, site, crawl_id, tmp_path, "STATECRAWL_DUPEFILTER=bloom",
                     "STATECRAWL_BLOOM_CAPACITY=10000")
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    items = {key.decode(): load_item(v) for key, v in client.hgetall(k + "items").items()}
    assert set(items) == site.expected_urls()
    assert client.hget(k + "meta", "dupefilter") == b"bloom"
    assert client.hget(k + "meta", "bloom_capacity") == b"10000"
    assert client.strlen(k + "bloom") == bloom_parameters(10_000, 1e-4)[0] // 8
    assert not client.exists(k + "digests") and not client.exists(k + "seen")
    stats = client.hgetall(k + "stats")
    assert int(stats[b"bloom_estimated_false_skips"]) == 0
    assert int(stats[b"seen"]) >= len(items)
    assert "'statecrawl/bloom_estimated_false_skips': 0" in log

    # a worker with other settings joins the (finished) crawl: it uses the crawl's filter
    site.reset_hits()
    log = crawl_site(redis_server, site, crawl_id, tmp_path, "STATECRAWL_DUPEFILTER=bloom",
                     "STATECRAWL_BLOOM_CAPACITY=50000", "STATECRAWL_BLOOM_ERROR_RATE=0.01")
    assert "has a Bloom filter for 10000 URLs at error rate 0.0001" in log
    log = crawl_site(redis_server, site, crawl_id, tmp_path)  # exact, the default
    assert "uses the 'bloom' dupefilter (fixed by its first worker)" in log
    assert {p: n for p, n in site.hits.items() if p != "/robots.txt"} == {}
    assert client.strlen(k + "bloom") == bloom_parameters(10_000, 1e-4)[0] // 8


def test_exact_crawl_end_to_end(redis_server: RedisServer, site: DemoSite, crawl_id: str,
                                tmp_path: Path) -> None:
    crawl_site(redis_server, site, crawl_id, tmp_path)
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    assert set(client.hkeys(k + "items")) == {u.encode() for u in site.expected_urls()}
    assert client.hget(k + "meta", "dupefilter") == b"exact"
    packed = sum(len(v) for v in client.hvals(k + "digests"))
    assert packed == 8 * int(client.hget(k + "stats", "seen")) >= 8 * len(site.expected_urls())


def test_with_scrapys_scheduler_the_exact_keys_persist(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    df = "DUPEFILTER_CLASS=statecrawl.frontier.dupefilter.RedisDupeFilter"
    first = runspider(tmp_path, redis_server, site, crawl_id, df)
    assert first.returncode == 0, first.stderr[-3000:]
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    seen = int(client.hget(k + "stats", "seen"))
    assert seen > 5 and client.hget(k + "meta", "dupefilter") == b"exact"
    assert sum(len(v) for v in client.hvals(k + "digests")) == 8 * seen
    site.reset_hits()
    second = runspider(tmp_path, redis_server, site, crawl_id, df, "STATECRAWL_DUPEFILTER=bloom")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "bloom needs statecrawl's scheduler" in second.stderr
    assert f"loaded {seen} fingerprints" in second.stderr
    assert sum(site.hits.values()) == 0  # everything was already seen


def test_with_scrapys_scheduler_a_bloom_crawl_is_refused(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    async def body(store: CrawlStore) -> CrawlDupefilter:
        return await open_crawl_dupefilter(store, "bloom", capacity=1000, error_rate=1e-3)

    run(redis_server.url, crawl_id, body)
    site.reset_hits()
    result = runspider(tmp_path, redis_server, site, crawl_id,
                       "DUPEFILTER_CLASS=statecrawl.frontier.dupefilter.RedisDupeFilter")
    assert "uses the bloom dupefilter, which works only with statecrawl's scheduler" in result.stderr
    assert sum(site.hits.values()) == 0
