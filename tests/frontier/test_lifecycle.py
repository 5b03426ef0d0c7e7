"""Purge, the finished-crawl sweep and the bytes of a crawl (statecrawl.frontier.lifecycle, .sweep),
against the session's real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from statecrawl.exceptions import ConfigError, CrawlStateLost
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.lifecycle import (
    CrawlRunning,
    PurgeResult,
    UnknownCrawl,
    _unlink,
    crawl_bytes,
    crawl_pattern,
    purge_crawl,
    sweep_finished,
)
from statecrawl.frontier.store import CrawlStore, PendingRequest
from statecrawl.frontier.sweep import finished_ttl, sweep_every
from tests.conftest import RedisServer, run_client

API_INDEXES = ("sc:api:active:crawl", "sc:api:active:batch", "sc:api:hooks")


def _req(url: str) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0,
                          json.dumps({"v": 1, "url": url}).encode())


async def _populate(client: AsyncRedis, crawl_id: str, *, big: int = 0, job: bool = True) -> CrawlStore:
    """A crawl with a key of every kind: frontier, items, sessions, tickets, and (*job*) an API
    job, ended, with its entries in the API's indexes."""
    store = CrawlStore(client, crawl_id)
    await store.open_crawl(spider="test", start_url="http://example.com/")
    await store.commit("w1", dedupe="exact", requests=[_req(f"http://example.com/{i}") for i in range(5)])
    k = store.keys
    await client.hset(k.items, mapping={f"http://example.com/{i}": "x" * 200 for i in range(big or 3)})
    await client.hset(k.hosts, "example.com", 1)
    await client.hset(k.sessions, "default", "{}")
    await client.hset(k.jar("default"), "f", "v")
    await client.set(k.browser("default"), "{}")
    await client.set(k.ticket("abc"), "")
    await client.rpush(k.reply("abc"), "{}")
    if job:  # a whole record: the API's other tests read these indexes in the same Redis
        now_ms = int(time.time() * 1000)
        await client.hset(k.prefix + "job", mapping={
            "kind": "crawl", "status": "completed", "url": "http://example.com/", "limit": 0,
            "docs": 1, "failed": 0, "total": 1, "created_at": now_ms, "updated_at": now_ms,
            "finished_at": now_ms, "expires_at": now_ms + 3_600_000})
        await client.hset(k.prefix + "job:docs", "0", "doc")
        for key in API_INDEXES:
            await client.zadd(key, {crawl_id: 1})
    return store


def _keys(server: RedisServer, pattern: str) -> set[bytes]:
    client = server.client()
    try:
        return set(client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


def _snapshot(server: RedisServer, crawl_id: str) -> dict[bytes, bytes | None]:
    """Every key of a crawl -> its DUMP (to tell it was not touched)."""
    client = server.client()
    try:
        return {key: client.dump(key) for key in client.scan_iter(match=crawl_pattern(crawl_id))}
    finally:
        client.close()


def test_pattern_escapes_the_id_and_the_braces() -> None:
    assert crawl_pattern("a.b-c_1") == "sc:\\{a.b\\-c_1[}~][:0-9]*"
    assert crawl_pattern() == "sc:\\{*"
    with pytest.raises(ConfigError):
        crawl_pattern("a*b")


def test_purge_removes_every_key_and_nothing_of_lookalike_crawls(
    redis_server: RedisServer, crawl_id: str,
) -> None:
    others = [f"{crawl_id}.b", f"{crawl_id}-b", f"{crawl_id}b", f"x{crawl_id}"]
    foreign = [f"sc:{{{crawl_id}*b}}:meta", f"sc:{{{crawl_id}?}}:items", f"sc:{{{crawl_id}}}",
               f"sc:{{{crawl_id}[a]}}:x", f"sc:{crawl_id}:meta"]

    async def setup(client: AsyncRedis) -> None:
        await _populate(client, crawl_id, big=20_000)  # a big hash: freed by UNLINK's thread
        for other in others:
            await _populate(client, other)
        for key in foreign:
            await client.set(key, "not statecrawl's")
        await client.sadd(CRAWLS_KEY, f"{crawl_id}*b")

    run_client(redis_server.url, setup)
    before = {other: _snapshot(redis_server, other) for other in others}
    mine = _keys(redis_server, crawl_pattern(crawl_id))
    assert len(mine) >= 15

    result = run_client(redis_server.url, lambda c: purge_crawl(c, crawl_id))
    assert result.state == "running" and result.live_workers == 0
    assert result.keys == len(mine) and result.left == 0 and not result.recreated
    assert result.bytes > 20_000 * 200
    assert _keys(redis_server, crawl_pattern(crawl_id)) == set()
    client = redis_server.client()
    try:
        assert not client.sismember(CRAWLS_KEY, crawl_id)
        for key in API_INDEXES:
            assert client.zscore(key, crawl_id) is None
            assert client.zscore(key, others[0]) == 1  # another crawl's entry stays
        assert all(client.get(key) == b"not statecrawl's" for key in foreign)
        assert client.sismember(CRAWLS_KEY, f"{crawl_id}*b")
    finally:
        client.close()
    for other in others:
        assert _snapshot(redis_server, other) == before[other], other

    # the same for a.b next to a-b
    result = run_client(redis_server.url, lambda c: purge_crawl(c, others[0]))
    assert result.keys == len(before[others[0]])
    assert _keys(redis_server, crawl_pattern(others[0])) == set()
    assert _snapshot(redis_server, others[1]) == before[others[1]]
    for other in others[1:]:  # (the API's tests read its indexes in the same Redis)
        run_client(redis_server.url, lambda c, other=other: purge_crawl(c, other))


def test_dry_run_counts_what_a_purge_removes_and_deletes_nothing(
    redis_server: RedisServer, crawl_id: str,
) -> None:
    run_client(redis_server.url, lambda c: _populate(c, crawl_id))
    snapshot = _snapshot(redis_server, crawl_id)
    dry = run_client(redis_server.url, lambda c: purge_crawl(c, crawl_id, dry_run=True))
    assert _snapshot(redis_server, crawl_id) == snapshot
    assert dry.keys == len(snapshot) and dry.bytes > 0 and dry.dry_run
    assert set(dry.indexes) == {CRAWLS_KEY, *API_INDEXES}
    assert dry.samples == sorted(key.decode() for key in snapshot)[:20]
    real = run_client(redis_server.url, lambda c: purge_crawl(c, crawl_id))
    assert (real.keys, real.bytes) == (dry.keys, dry.bytes)


def test_unknown_crawl_is_an_error(redis_server: RedisServer, crawl_id: str) -> None:
    for dry_run in (False, True):
        with pytest.raises(UnknownCrawl, match="no crawl"):
            run_client(redis_server.url, lambda c: purge_crawl(c, crawl_id, dry_run=dry_run))


def test_a_running_crawl_is_refused_unless_forced_then_its_worker_gets_sclost(
    redis_server: RedisServer, crawl_id: str,
) -> None:
    async def body(client: AsyncRedis) -> tuple[str, int]:
        worker = await _populate(client, crawl_id)  # the worker's own view: it knows the epoch
        await worker.heartbeat("w1", 60)
        with pytest.raises(CrawlRunning, match="is running .*--force"):
            await purge_crawl(client, crawl_id)
        assert await client.exists(worker.keys.meta, worker.keys.fifo) == 2  # nothing deleted
        result = await purge_crawl(client, crawl_id, force=True, wait=0.5)
        for call in (lambda: worker.lease("w1", 5, check_finished=True),
                     lambda: worker.commit("w1", dedupe="exact", requests=[_req("http://example.com/new")])):
            with pytest.raises(CrawlStateLost, match="gone from Redis"):
                await call()
        assert await client.exists(worker.keys.fifo, worker.keys.fifo_list(0),
                                   worker.keys.reqs) == 0  # nothing written back
        return result.state, result.live_workers

    assert run_client(redis_server.url, body) == ("running", 1)
    assert _keys(redis_server, crawl_pattern(crawl_id)) == set()


def test_a_running_api_job_is_refused_unless_forced(redis_server: RedisServer, crawl_id: str) -> None:
    async def body(client: AsyncRedis) -> PurgeResult:
        await client.hset(f"sc:{{{crawl_id}}}:job", mapping={"kind": "batch", "status": "scraping"})
        await client.zadd("sc:api:active:batch", {crawl_id: 1})
        with pytest.raises(CrawlRunning, match="running API job"):
            await purge_crawl(client, crawl_id)
        return await purge_crawl(client, crawl_id, force=True)

    result = run_client(redis_server.url, body)
    assert result.keys == 1 and result.indexes == ["sc:api:active:batch"]
    client = redis_server.client()
    try:
        assert client.zscore("sc:api:active:batch", crawl_id) is None
    finally:
        client.close()


def test_a_purge_stops_when_the_crawl_is_created_again(redis_server: RedisServer, crawl_id: str) -> None:
    async def body(client: AsyncRedis) -> PurgeResult:
        store = await _populate(client, crawl_id)
        await client.delete(store.keys.meta)  # step 1 of a purge ...
        await CrawlStore(client, crawl_id).open_crawl(spider="new")  # ... and a new crawl
        result = PurgeResult(crawl_id)
        await _unlink(client, {crawl_id: result})
        return result

    result = run_client(redis_server.url, body)
    assert result.recreated and result.keys == 0
    assert len(_keys(redis_server, crawl_pattern(crawl_id))) > 10  # the new crawl's keys stay


async def _finished(client: AsyncRedis, crawl_id: str, ago: float, job: bool = False) -> CrawlStore:
    """A crawl (not an API job's, unless *job*) that finished *ago* seconds ago."""
    store = await _populate(client, crawl_id, job=job)
    await client.delete(store.keys.fifo, store.keys.fifo_list(0), store.keys.queue, store.keys.leases)
    now, _ = await client.time()
    await client.hset(store.keys.meta, mapping={"state": "finished", "finished_at": int(now - ago)})
    return store


def test_sweep_purges_old_finished_crawls_only(redis_server: RedisServer, crawl_id: str) -> None:
    old, recent, running, live, again, mine, job = (
        f"{crawl_id}-{n}" for n in ("old", "recent", "running", "live", "again", "mine", "job"))

    async def body(client: AsyncRedis) -> list[str]:
        await _finished(client, old, 600)
        await _finished(client, recent, 10)
        await _populate(client, running)
        await (await _finished(client, live, 600)).heartbeat("w1", 60)
        await _finished(client, mine, 600)
        await _finished(client, job, 600, job=True)  # expires with its API job instead
        # finished long ago, then work appeared: it runs again and loses finished_at
        rerun = await _finished(client, again, 600)
        await rerun.commit("w2", dedupe="exact", requests=[_req("http://example.com/late")])
        assert await client.hget(rerun.keys.meta, "state") == b"running"
        dry = await sweep_finished(client, 300, exclude={mine}, dry_run=True)
        assert [r.crawl_id for r in dry if r.crawl_id.startswith(crawl_id)] == [old]
        assert await client.exists(CrawlKeys(old).meta)
        purged = await sweep_finished(client, 300, exclude={mine})
        return [r.crawl_id for r in purged if r.crawl_id.startswith(crawl_id)]

    assert run_client(redis_server.url, body) == [old]
    assert _keys(redis_server, crawl_pattern(old)) == set()
    for kept in (recent, running, live, again, mine, job):
        assert _keys(redis_server, crawl_pattern(kept)), kept
    client = redis_server.client()
    try:
        assert not client.sismember(CRAWLS_KEY, old) and client.sismember(CRAWLS_KEY, recent)
    finally:
        client.close()


def test_sweep_every_runs_at_once_and_is_cancellable(redis_server: RedisServer, crawl_id: str) -> None:
    async def body(client: AsyncRedis) -> int:
        await _finished(client, crawl_id, 600)
        task = asyncio.ensure_future(sweep_every(client, 300, 3600))
        deadline = time.monotonic() + 10
        keys = CrawlKeys(crawl_id)
        # the purge deletes meta first, the other keys after it: wait for the last of them
        while await client.exists(keys.meta, keys.items):
            assert time.monotonic() < deadline, "the first sweep did not come"
            await asyncio.sleep(0.02)
        # Python 3.11 can lose a cancel that meets a timeout inside redis-py's read (the
        # task then sleeps its interval: an hour). Cancel until it ends, boundedly.
        for _ in range(20):
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
            if task.done():
                break
        assert task.cancelled()
        return int(await client.exists(keys.meta, keys.items, keys.stats))

    assert run_client(redis_server.url, body) == 0


def test_crawl_bytes_is_memory_usage_summed(redis_server: RedisServer, crawl_id: str) -> None:
    run_client(redis_server.url, lambda c: _populate(c, crawl_id, big=2000))
    client = redis_server.client()
    try:
        expected = sum(int(client.memory_usage(key, samples=5) or 0)
                       for key in client.scan_iter(match=crawl_pattern(crawl_id)))
    finally:
        client.close()
    one, complete = run_client(redis_server.url, lambda c: crawl_bytes(c, crawl_id))
    assert complete and one == {crawl_id: expected}
    every, complete = run_client(redis_server.url, lambda c: crawl_bytes(c))
    assert complete and every[crawl_id] == expected
    bounded, complete = run_client(redis_server.url, lambda c: crawl_bytes(c, crawl_id, max_keys=3))
    assert not complete and 0 < bounded[crawl_id] < expected


@pytest.mark.parametrize(("value", "seconds"), [(None, 0.0), ("", 0.0), ("0", 0.0), ("86400", 86400.0),
                                                (3.5, 3.5)])
def test_finished_ttl_setting(value: Any, seconds: float) -> None:
    assert finished_ttl(value) == seconds


@pytest.mark.parametrize("value", ["-1", "a week", "inf", "nan"])
def test_finished_ttl_refuses_nonsense(value: str) -> None:
    with pytest.raises(ConfigError, match="STATECRAWL_FINISHED_TTL"):
        finished_ttl(value)


def test_the_first_step_checks_atomically_what_may_go(redis_server: RedisServer, crawl_id: str) -> None:
    """purge_meta.lua in ``ttl`` mode keeps whatever changed since the sweep read the crawl."""
    from statecrawl.frontier.store import script_source

    async def body(client: AsyncRedis) -> dict[str, str]:
        step = client.register_script(script_source("purge_meta.lua"))

        async def ttl_step(cid: str) -> str:
            k = CrawlKeys(cid)
            out = await step(keys=[k.meta, k.workers, k.prefix + "job"], args=["ttl", 15000, 300])
            return str(out[0].decode())

        out = {}
        rerun = await _finished(client, f"{crawl_id}-a", 600)
        await rerun.commit("w", dedupe="exact", requests=[_req("http://example.com/late")])
        out["ran again"] = await ttl_step(f"{crawl_id}-a")
        await _finished(client, f"{crawl_id}-b", 10)
        out["recent"] = await ttl_step(f"{crawl_id}-b")
        await (await _finished(client, f"{crawl_id}-c", 600)).heartbeat("w", 60)
        out["joined"] = await ttl_step(f"{crawl_id}-c")
        await _finished(client, f"{crawl_id}-d", 600)
        await client.hset(CrawlKeys(f"{crawl_id}-d").prefix + "job", "status", "scraping")
        out["job"] = await ttl_step(f"{crawl_id}-d")
        await _finished(client, f"{crawl_id}-f", 600, job=True)
        out["api job"] = await ttl_step(f"{crawl_id}-f")
        await _finished(client, f"{crawl_id}-e", 600)
        out["old"] = await ttl_step(f"{crawl_id}-e")
        out["twice"] = await ttl_step(f"{crawl_id}-e")
        return out

    assert run_client(redis_server.url, body) == {
        "ran again": "not_finished", "recent": "recent", "joined": "live", "job": "job_running",
        "api job": "api_job", "old": "purged", "twice": "gone"}
