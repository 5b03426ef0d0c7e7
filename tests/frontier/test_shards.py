"""One crawl over several shards (STATECRAWL_SHARDS; statecrawl/frontier/shards.py), on
the session's real Redis: routing, the two-phase commit and its replays, leases across
shards, the end check, the dead-worker sweep, refusals, and real crawls (two workers,
and the chaos test) whose every page is stored once. On a cluster: tests/cluster.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.crc import key_slot

from statecrawl.cli import main as cli
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.hosts import Budget, budget_store
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.lifecycle import crawl_pattern
from statecrawl.frontier.liveness import HeartbeatThread
from statecrawl.frontier.shards import shard_count, shard_of, shard_of_host, split_id
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest
from tests._servers import Reply, ScriptedServer, gaps, links_page
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


def test_a_limit_and_an_old_crawl(redis_server: RedisServer, crawl_id: str) -> None:
    async def limited(client):  # type: ignore[no-untyped-def]
        await CrawlStore(client, crawl_id).open_crawl(spider="t", limit=5, shards=SHARDS)

    with pytest.raises(ConfigError, match="takes no page limit"):
        run_client(redis_server.url, limited)
    client = redis_server.client()
    assert not client.exists(f"sc:{{{crawl_id}}}:meta")  # refused before anything was written

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


def _crawl(redis_url: str, crawl_id: str, site: DemoSite, out: Path, *extra: str,
           workers: int = 2) -> list[subprocess.Popen[str]]:
    procs = [scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-s", f"STATECRAWL_SHARDS={SHARDS}", *extra],
                          worker_env(redis_url, out / f"w{i}"), wait=False)
             for i in range(workers)]
    for p in procs:
        p.wait(180)
    return procs  # type: ignore[return-value]


@pytest.mark.slow
def test_two_workers_crawl_a_sharded_crawl_every_page_once(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with DemoSite(pages=150) as site:
        procs = _crawl(redis_server.url, crawl_id, site, tmp_path)
        logs = "\n".join((p.stdout.read() if p.stdout else "")[-3000:] for p in procs)
        assert [p.returncode for p in procs] == [0, 0], logs
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export", context="shards:")
    client = redis_server.client()
    for shard in range(1, SHARDS):
        k = CrawlKeys(crawl_id, shard, SHARDS)
        assert int(client.hget(k.stats, "acked") or 0) > 10, shard  # every shard served pages
        assert client.hlen(k.leases) == 0 and client.zcard(k.fifo) == 0
    # purge removes every shard's keys too
    assert cli(["--redis-url", redis_server.url, "purge", crawl_id]) == 0
    assert list(client.scan_iter(match=crawl_pattern(crawl_id))) == []
    client.close()


def test_a_sharded_crawl_refuses_bloom_and_a_budget_it_was_not_made_for(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with DemoSite(pages=5) as site:
        def worker(n: int, cid: str, *extra: str) -> str:
            done = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={cid}",
                                 "-s", f"STATECRAWL_SHARDS={SHARDS}", *extra],
                                worker_env(redis_server.url, tmp_path / str(n)), timeout=120)
            assert done.returncode == (1 if extra else 0), (done.stdout + done.stderr)[-3000:]
            return done.stdout + done.stderr

        log = worker(0, f"{crawl_id}-0", "-s", "STATECRAWL_DUPEFILTER=bloom")
        assert "shards" in log and "dupefilter" in log, log[-3000:]
        # made without a budget: sharded by fingerprint, so a budget later is refused
        worker(1, f"{crawl_id}-1")
        log = worker(2, f"{crawl_id}-1", "-s", "DOWNLOAD_DELAY=0.01")
        assert "by request fingerprint" in log and "cannot take a politeness budget" in log, log[-3000:]
        assert cli(["--redis-url", redis_server.url, "hosts", f"{crawl_id}-1", "--delay", "1"]) == 2


def _host_req(url: str) -> PendingRequest:
    body = json.dumps({"v": 1, "url": url}).encode()  # polite.lua reads the host from it
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0, body,
                          host=urlsplit(url).hostname or "")


def test_a_polite_crawl_is_sharded_by_host(redis_server: RedisServer, crawl_id: str) -> None:
    hosts = [f"h{i}.test" for i in range(12)]

    async def main(client):  # type: ignore[no-untyped-def]
        store = CrawlStore(client, crawl_id)
        await store.open_crawl(spider="t", shards=SHARDS, shard_by_host=True)
        assert store.sharding is not None and store.sharding.by_host
        budget = await budget_store(store, to_set=True)
        await budget.configure(Budget(delay=0.2, horizon=0.5, late=0.0,
                                      overrides=[("h1.test", "d", 300)]))
        await store.commit("w", dedupe="exact",
                           requests=[_host_req(f"http://{h}/{i}") for h in hosts for i in range(3)])
        pairs: list[tuple[str, bytes]] = []
        for _ in range(2 * SHARDS):  # the shards in turn
            pairs += (await store.lease("w", 50, check_finished=False))[1]
        due = store.next_due_in  # nothing left within the horizon: when the first host is due
        # a crawl sharded by fingerprint cannot take a budget
        other = CrawlStore(client, crawl_id + "-fp")
        await other.open_crawl(spider="t", shards=SHARDS)
        with pytest.raises(ConfigError, match="by request fingerprint"):
            await budget_store(other, to_set=True)
        return pairs, due

    pairs, due = run_client(redis_server.url, main)
    assert due is not None and 0 < due <= 0.6
    client = redis_server.client()
    assert client.hget(f"sc:{{{crawl_id}}}:meta", "shard_by") == b"host"
    slots: dict[str, list[int]] = collections.defaultdict(list)
    for lease, _ in pairs:
        rid, at, _now, host = lease.split(" ", 3)
        shard, _ = split_id(rid)
        assert shard == shard_of_host(host, SHARDS), lease  # leased from its host's shard
        slots[host].append(int(at))
    assert len({shard_of_host(h, SHARDS) for h in hosts}) > 1  # the hosts spread
    for host in hosts:
        at = sorted(slots[host])
        want = [0, 300] if host == "h1.test" else [0, 200, 400]  # its override; the horizon
        assert [t - at[0] for t in at] == want, (host, at)
        k = CrawlKeys(crawl_id, shard_of_host(host, SHARDS), SHARDS)
        assert int(client.hget(k.hosts, f"{host}|n")) == len(want)  # in flight, in its shard
        assert client.zlexcount(k.hostq, f"[{host} ", f"({host}!") == 3 - len(want)
    for s in range(SHARDS):  # the crawl's budget is in every shard
        k = CrawlKeys(crawl_id, s, SHARDS)
        assert client.hget(k.hosts, "*|d") == b"200" and client.hget(k.meta, "polite") == b"1"
    assert client.hget(CrawlKeys(crawl_id, shard_of_host("h1.test", SHARDS), SHARDS).hosts,
                       "h1.test|d") == b"300"
    client.close()


_HOSTS_SPIDER = """
import os
from urllib.parse import urlsplit
from scrapy import Request, Spider

class Hosts(Spider):
    name = "hosts"
    crawl_id = os.environ["TEST_CRAWL_ID"]
    custom_settings = {"ROBOTSTXT_OBEY": False, "TELNETCONSOLE_ENABLED": False}

    async def start(self):
        for url in os.environ["TEST_URLS"].split():
            yield Request(url)

    def parse(self, response):
        host = urlsplit(response.url).netloc
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if urlsplit(url).netloc == host:
                yield Request(url)
"""


def polite_hosts_crawl(redis_url: str, crawl_id: str, tmp_path: Path,
                       shards: int) -> list[ScriptedServer]:
    """Two workers crawl three sites (127.0.0.1-3, 9 pages each) with a 0.2 s delay per
    host, in a crawl of *shards* shards; returns the (stopped) sites."""
    spider = tmp_path / "hosts_spider.py"
    spider.write_text(_HOSTS_SPIDER)
    with contextlib.ExitStack() as stack:
        sites = [stack.enter_context(ScriptedServer(
            {"/": [links_page(8)], "/robots.txt": [Reply(404)]}, host=f"127.0.0.{i}"))
            for i in (1, 2, 3)]
        env = worker_env(redis_url, TEST_CRAWL_ID=crawl_id,
                         TEST_URLS=" ".join(site.url + "/" for site in sites))
        cmd = [sys.executable, "-m", "scrapy", "runspider", str(spider), "-s",
               'ADDONS={"statecrawl.Addon": 0}', "-s", "STATECRAWL_HOST_DELAY=0.2",
               "-s", f"STATECRAWL_SHARDS={shards}"]
        procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        logs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return sites


def check_host_delays(sites: list[ScriptedServer]) -> None:
    """Each site saw each of its pages once, and the crawl's 0.2 s delay between them."""
    for site in sites:
        paths = [path for _, path in site.times if path != "/robots.txt"]
        assert sorted(paths) == sorted(["/"] + [f"/p/{i}" for i in range(8)]), paths  # once each
        between = gaps([t for t, path in site.times if path != "/robots.txt"])
        # Slots are 205 ms apart (the delay + STATECRAWL_HOST_LATE); on the server a gap
        # can be ~10 ms shorter when the request before it reached the wire late (a new
        # connection, a busy event loop: seen 194 ms here; tests/frontier/test_politeness.py
        # checks the 5 ms bound on one host). Without the budget the pages come at once.
        assert min(between) >= 0.17 and sum(between) / len(between) >= 0.2, (site.host, between)


def test_two_workers_keep_each_hosts_delay_in_a_crawl_sharded_by_host(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    check_host_delays(polite_hosts_crawl(redis_server.url, crawl_id, tmp_path, SHARDS))
    client = redis_server.client()
    meta = f"sc:{{{crawl_id}}}:meta"
    assert client.hget(meta, "shard_by") == b"host" and client.hget(meta, "state") == b"finished"
    client.close()


@pytest.mark.slow
def test_chaos_on_a_sharded_crawl(redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    chaos_crawl(redis_server, crawl_id, tmp_path, extra=["-s", f"STATECRAWL_SHARDS={SHARDS}"],
                shards=SHARDS)
