"""One crawl over several shards (STATECRAWL_SHARDS; statecrawl/frontier/shards.py), on
the session's real Redis: routing, the two-phase commit and its replays, leases across
shards, the end check, the dead-worker sweep, refusals, and real crawls (two workers,
and the chaos test) whose every page is stored once. On a cluster: tests/cluster.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import subprocess
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from statecrawl.cli import main as cli
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.dupefilter import DEFAULT_BLOOM_ERROR_RATE, bloom_parameters
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.lifecycle import crawl_pattern
from statecrawl.frontier.liveness import HeartbeatThread
from statecrawl.frontier.shards import shard_count, shard_of, split_id
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest
from tests.conftest import RedisServer, run_client, scrapy_crawl, worker_env
from tests.frontier.test_chaos import chaos_crawl, check_every_page_once

SHARDS = 4


def req(url: str) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0, url.encode())


def urls_by_shard(n: int = 40) -> dict[int, list[str]]:
    out: dict[int, list[str]] = collections.defaultdict(list)
    for i in range(n):
        url = f"http://x/{i}"
        out[shard_of(hashlib.sha1(url.encode()).digest(), SHARDS)].append(url)
    return out


def run(url: str, crawl_id: str, body, shards: int = SHARDS):  # type: ignore[no-untyped-def]
    async def main(client):  # type: ignore[no-untyped-def]
        store = CrawlStore(client, crawl_id)
        await store.open_crawl(spider="test", shards=shards)
        return await body(store)

    return run_client(url, main)


def test_routing_ids_keys_and_settings() -> None:
    counts = collections.Counter(shard_of(hashlib.sha1(b"%d" % i).digest(), SHARDS)
                                 for i in range(4000))
    assert set(counts) == set(range(SHARDS)) and min(counts.values()) > 850, counts
    # not the digest's bucket bytes: one dupefilter bucket still spreads over the shards
    assert len({shard_of(b"\x00\x00" + bytes([i]) * 18, SHARDS) for i in range(64)}) == SHARDS
    assert split_id("3:00000000000a") == (3, "00000000000a")
    assert split_id("00000000000a") == (0, "00000000000a")
    k = CrawlKeys("c-1", 3, 8)
    assert k.prefix.startswith("sc:{c-1~3.") and k.meta == k.prefix + "shard"
    assert k.of_shard(0).meta == "sc:{c-1}:meta" and k.of_shard(5) == CrawlKeys("c-1", 5, 8)
    # the n shards sit in the n slices of the slots, one each: spread over any even split
    for crawl in ("c-1", "another", "x"):
        for n in (3, 8, 64):
            slices = sorted(key_slot(CrawlKeys(crawl, s, n).meta.encode()) * n // 16384
                            for s in range(n))
            assert slices == list(range(n)), (crawl, n, slices)
    assert shard_count("8") == 8
    for bad in ("0", "-1", "x", "100000"):
        with pytest.raises(ConfigError, match="STATECRAWL_SHARDS"):
            shard_count(bad)
    # one SCAN pattern finds a crawl's keys and its shards', not another crawl's
    import fnmatch  # SCAN's glob: the escapes of crawl_pattern are fnmatch's [..] here
    pattern = crawl_pattern("c-1").replace("\\{", "[{]").replace("\\-", "-")
    assert fnmatch.fnmatchcase("sc:{c-1}:meta", pattern)
    assert fnmatch.fnmatchcase("sc:{c-1~3}:fifo:0", pattern)
    assert not fnmatch.fnmatchcase("sc:{c-12}:meta", pattern)


def test_a_commit_spreads_over_shards_and_is_applied_once(redis_server: RedisServer, crawl_id: str) -> None:
    spread = urls_by_shard()
    client = redis_server.client()

    async def body(store: CrawlStore) -> list[object]:
        assert store.sharding is not None and store.sharding.count == SHARDS
        out: list[object] = []
        every = [req(u) for urls in spread.values() for u in urls]
        out.append(await store.commit("w", dedupe="exact", requests=every, token="t1"))
        out.append(await store.commit("w", dedupe="exact", requests=every, token="t1"))  # a resend
        pairs: list[tuple[str, bytes]] = []
        for _ in range(2 * SHARDS):  # a lease takes from one shard: the next one's turn after
            got = (await store.lease("w", 100, check_finished=False))[1]
            assert len({split_id(i)[0] for i, _ in got}) <= 1
            pairs += got
        out.append(pairs)
        # the output of the leased pages in every shard, their acks, an item
        done = await store.commit("w", dedupe="exact", requests=[req("http://new/1")],
                                  items=[PendingItem("http://x/0", False, b'{"url": "http://x/0"}')],
                                  acks=[i for i, _ in pairs], token="t2")
        out.append(done)
        out.append(await store.status())
        return out

    first, again, pairs, done, status = run(redis_server.url, crawl_id, body)
    assert first.enqueued == 40 and again == first  # the resend applied nothing
    ids = [i for i, _ in pairs]  # type: ignore[union-attr]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert {split_id(i)[0] for i in ids} == set(range(SHARDS))
    assert done.acked == 40 and done.enqueued == 1  # type: ignore[union-attr]
    for shard, urls in spread.items():
        k = CrawlKeys(crawl_id, shard, SHARDS)
        assert int(client.hget(k.stats, "enqueued")) >= len(urls)
        assert client.hlen(k.leases) == 0 and client.hlen(k.reqs) == 0
    assert client.hkeys(f"sc:{{{crawl_id}}}:items") == [b"http://x/0"]  # items: shard 0
    assert status["shards"] == SHARDS and status["queued"] == 1 and status["in_flight"] == 0  # type: ignore[index]
    assert status["stats"]["enqueued"] == 41 and status["stats"]["acked"] == 40  # type: ignore[index]
    client.close()


def test_a_sub_commit_whose_reply_was_lost_is_not_applied_again(
        redis_server: RedisServer, crawl_id: str) -> None:
    """The call for shard s reached Redis, its reply did not (as after a cut connection):
    the batch re-sent with the same token replays that call instead of applying it twice."""
    spread = urls_by_shard()
    shard = next(s for s in spread if s)
    dont_filter = [PendingRequest(hashlib.sha1(u.encode()).digest(), False, 0, u.encode())
                   for u in spread[shard]]  # not deduplicated: a second apply would show
    other = [req(u) for u in spread[0]]

    async def body(store: CrawlStore) -> object:
        await store.commit_on(CrawlKeys(crawl_id, shard, SHARDS), "w", dedupe="exact",
                              requests=dont_filter, token=f"T.o{shard}")
        return await store.commit("w", dedupe="exact", requests=[*dont_filter, *other], token="T")

    result = run(redis_server.url, crawl_id, body)
    client = redis_server.client()
    assert int(client.hget(CrawlKeys(crawl_id, shard, SHARDS).stats, "enqueued")) == len(dont_filter)
    assert result.enqueued == len(dont_filter) + len(other)  # type: ignore[attr-defined]
    client.close()


def test_the_crawl_ends_only_when_every_shard_is_empty(redis_server: RedisServer, crawl_id: str) -> None:
    spread = urls_by_shard()
    last = max(spread)

    async def body(store: CrawlStore) -> list[object]:
        seen: list[object] = []
        await store.commit("w", dedupe="exact", requests=[req(spread[last][0])])
        seen.append(await store.lease("w", 1, check_finished=True))  # the one request
        seen.append(await store.lease("w", 1, check_finished=True))  # its lease is open
        seen.append(await store.client.hget(store.keys.meta, "state"))
        await store.commit("w", dedupe="exact", acks=[seen[0][1][0][0]])  # type: ignore[index]
        seen.append(await store.lease("w", 1, check_finished=True))
        seen.append(await store.client.hget(store.keys.meta, "state"))
        return seen

    got, open_lease, state_before, end, state_after = run(redis_server.url, crawl_id, body)
    assert got[0] == "running" and split_id(got[1][0][0])[0] == last  # type: ignore[index]
    assert open_lease == ("running", []) and state_before == b"running"
    assert end == ("finished", []) and state_after == b"finished"


def test_dead_workers_leases_in_other_shards_are_swept(redis_server: RedisServer, crawl_id: str) -> None:
    spread = urls_by_shard()

    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="exact", requests=[req(u) for u in spread[1] + spread[2]])
        await store.heartbeat("alive", 5.0)
        await store.lease_on(CrawlKeys(crawl_id, 1, SHARDS), "dead", 2, check_finished=False)
        await store.lease_on(CrawlKeys(crawl_id, 2, SHARDS), "alive", 2, check_finished=False)

    run(redis_server.url, crawl_id, body)
    client = redis.Redis(port=redis_server.port)
    k1, k2 = CrawlKeys(crawl_id, 1, SHARDS), CrawlKeys(crawl_id, 2, SHARDS)
    client.zadd(k1.workers, {"dead": 0})  # its last lease here: long ago
    beat = HeartbeatThread(url=redis_server.url, keys=CrawlKeys(crawl_id, 0, SHARDS), worker="alive",
                           interval=1, timeout=5, loop=asyncio.new_event_loop(),
                           on_reclaimed=lambda n, d: None, on_forgotten=lambda: None,
                           on_recovered=lambda: None, shards=SHARDS)
    assert beat._sweep(client) == 2
    assert client.hlen(k1.leases) == 0 and client.zcard(k1.queue) == 2
    assert client.hlen(k2.leases) == 2  # a live worker's leases stay
    assert client.hget(k1.stats, "reclaimed") == b"2"
    # a worker that leased in a shard just now is live there, even before shard 0 lists it
    run(redis_server.url, crawl_id, lambda store: store.lease_on(k1, "new", 1, check_finished=False),
        shards=1)
    assert beat._sweep(client) == 0 and client.hlen(k1.leases) == 1
    client.close()


def test_a_crawl_made_unsharded_stays_so(redis_server: RedisServer, crawl_id: str) -> None:
    client = redis_server.client()
    # a crawl made unsharded (as by earlier versions) stays so whatever a worker asks
    async def old_then_new(c):  # type: ignore[no-untyped-def]
        await CrawlStore(c, crawl_id).open_crawl(spider="t")
        store = CrawlStore(c, crawl_id)
        await store.open_crawl(spider="t", shards=SHARDS)
        return store.sharding

    assert run_client(redis_server.url, old_then_new) is None
    assert client.hget(f"sc:{{{crawl_id}}}:meta", "shards") is None
    client.close()


def test_a_lost_shard_stops_the_crawl(redis_server: RedisServer, crawl_id: str) -> None:
    from statecrawl.exceptions import CrawlStateLost

    run(redis_server.url, crawl_id, lambda store: asyncio.sleep(0))
    client = redis_server.client()
    client.delete(CrawlKeys(crawl_id, 2, SHARDS).meta)  # as a master restarted empty
    client.close()
    with pytest.raises(CrawlStateLost):
        run(redis_server.url, crawl_id, lambda store: asyncio.sleep(0))


def sharded_crawl(redis_url: str, crawl_id: str, site: DemoSite, out: Path, *extra: str,
           workers: int = 2) -> list[subprocess.Popen[str]]:
    """*workers* workers of the site spider on *site*, in a crawl of SHARDS shards."""
    procs = [scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-s", f"STATECRAWL_SHARDS={SHARDS}", *extra],
                          worker_env(redis_url, out / f"w{i}"), wait=False)
             for i in range(workers)]
    for p in procs:
        p.wait(180)
    return procs  # type: ignore[return-value]


@pytest.mark.slow
@pytest.mark.parametrize("dupefilter", ["exact", "bloom"])
def test_two_workers_crawl_a_sharded_crawl_every_page_once(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path, dupefilter: str) -> None:
    with DemoSite(pages=150) as site:
        procs = sharded_crawl(redis_server.url, crawl_id, site, tmp_path,
                       "-s", f"STATECRAWL_DUPEFILTER={dupefilter}",
                       "-s", "STATECRAWL_BLOOM_CAPACITY=100000")
        logs = "\n".join((p.stdout.read() if p.stdout else "")[-3000:] for p in procs)
        assert [p.returncode for p in procs] == [0, 0], logs
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export", context="shards:")
    client = redis_server.client()
    for shard in range(1, SHARDS):
        k = CrawlKeys(crawl_id, shard, SHARDS)
        assert int(client.hget(k.stats, "acked") or 0) > 10, shard  # every shard served pages
        assert client.hlen(k.leases) == 0 and client.zcard(k.fifo) == 0
    if dupefilter == "bloom":  # a filter per shard, each for a quarter of the capacity
        m, _ = bloom_parameters(100000 // SHARDS, DEFAULT_BLOOM_ERROR_RATE)
        assert client.hget(f"sc:{{{crawl_id}}}:meta", "bloom_capacity") == b"100000"
        for shard in range(SHARDS):
            k = CrawlKeys(crawl_id, shard, SHARDS)
            assert client.strlen(k.bloom) == -(-m // 8) and int(client.hget(k.stats, "seen")) > 10
            assert client.hlen(k.digests) == 0  # no exact layout beside it
    # purge removes every shard's keys too
    assert cli(["--redis-url", redis_server.url, "purge", crawl_id]) == 0
    assert list(client.scan_iter(match=crawl_pattern(crawl_id))) == []
    client.close()


@pytest.mark.slow
def test_chaos_on_a_sharded_crawl(redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    chaos_crawl(redis_server, crawl_id, tmp_path, extra=["-s", f"STATECRAWL_SHARDS={SHARDS}"],
                shards=SHARDS)
