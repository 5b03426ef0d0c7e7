"""statecrawl on a real Redis Cluster (3 masters + 3 replicas, tests/cluster/conftest.py).

One crawl per master, so every master serves a crawl: real ``scrapy crawl site``
workers given the ``redis+cluster://`` URL crawl them side by side, and each
page is stored and exported exactly once; the CLI (list, status, export,
cancel, purge) works over all masters; a script's PUBLISH on one node wakes a
listener subscribed on another; the watchdog and the heartbeat thread work on
a crawl of another master than the first seed; the chaos test (worker
SIGKILLs) and the API (a crawl job, a scrape) run here too (both slow).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from statecrawl.cli import main
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.cluster import is_cluster
from statecrawl.frontier.connection import connect, connect_sync, redis_from_url
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.lifecycle import crawl_pattern
from statecrawl.frontier.liveness import HeartbeatThread, listen_for_work
from statecrawl.frontier.store import CrawlStore
from statecrawl.observe.metrics import exposition
from statecrawl.observe.snapshot import redis_facts
from tests.cluster.conftest import LocalCluster
from tests.conftest import ROOT, run_client, run_store, scrapy_crawl, worker_env
from tests.frontier.test_chaos import chaos_crawl, check_every_page_once
from tests.frontier.test_liveness import req


def _run(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--redis-url", url, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _keys_by_master(cluster: LocalCluster, crawl_id: str) -> dict[str, int]:
    """How many keys of *crawl_id* each master holds (SCAN on each node's own connection)."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        client = node.client()
        try:
            if client.info("replication")["role"] == "master":
                counts[f"127.0.0.1:{node.port}"] = sum(
                    1 for _ in client.scan_iter(match=crawl_pattern(crawl_id), count=1000))
        finally:
            client.close()
    return counts


def test_cluster_url_connects_and_bad_ones_say_why(redis_cluster: LocalCluster) -> None:
    async def check() -> None:
        client = await connect(redis_cluster.url, name="statecrawl:test")
        try:
            assert isinstance(client, AsyncRedisCluster)
            assert await client.ping()
        finally:
            await client.aclose()

    asyncio.run(check())
    sync = connect_sync(redis_cluster.url)
    try:
        assert is_cluster(sync) and sync.ping()
    finally:
        sync.close()
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        redis_from_url("redis+cluster://127.0.0.1:7000/2")
    with pytest.raises(ConfigError, match="seed nodes"):
        redis_from_url("redis+cluster://")


@pytest.fixture(scope="module")
def crawled(redis_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[list[str], DemoSite, Path]]:
    """Three crawls of one site, one per master, run at once by real workers."""
    tmp = tmp_path_factory.mktemp("cluster-crawls")
    ids = redis_cluster.crawl_ids("crawl")
    with DemoSite(pages=60) as site:
        workers = [scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={cid}",
                                 "-s", "RETRY_TIMES=0"],
                                worker_env(redis_cluster.url, tmp / cid), wait=False)
                   for cid in ids]
        logs = [w.communicate(timeout=120)[0] for w in workers]  # type: ignore[union-attr]
        assert [w.returncode for w in workers] == [0] * len(ids), "\n".join(
            log[-3000:] for log in logs)
        assert all("Spider closed (finished)" in log for log in logs)
        yield ids, site, tmp


def test_a_crawl_per_master_stores_every_page_once(
        redis_cluster: LocalCluster, crawled: tuple[list[str], DemoSite, Path]) -> None:
    ids, site, tmp = crawled
    assert sorted(redis_cluster.master_of(cid) for cid in ids) == redis_cluster.masters()
    for cid in ids:
        check_every_page_once(redis_cluster, cid, site, tmp / f"export-{cid}", context=cid)
        # the crawl's keys, the rolling counters and fifo lists its scripts name included,
        # are on its master alone
        counts = _keys_by_master(redis_cluster, cid)
        assert {m for m, n in counts.items() if n} == {redis_cluster.master_of(cid)}, counts


def test_cli_lists_shows_cancels_and_purges_over_every_master(
        redis_cluster: LocalCluster, crawled: tuple[list[str], DemoSite, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    ids, site, _ = crawled
    url = redis_cluster.url
    with redis_cluster.client() as client:
        client.srem(CRAWLS_KEY, ids[0])  # a crash between the crawl's meta and the index
    code, out, err = _run(url, capsys, "list", "--json")
    assert code == 0, err
    rows = {r["crawl_id"]: r for r in json.loads(out)}
    for cid in ids:  # bytes come from a SCAN of every master; the lost index entry is back
        assert rows[cid]["state"] == "finished" and rows[cid]["done"] == len(site.expected_urls())
        assert rows[cid]["bytes"] > 0, rows[cid]
    with redis_cluster.client() as client:
        assert client.sismember(CRAWLS_KEY, ids[0])

    code, out, err = _run(url, capsys, "status", ids[1])
    assert code == 0, err
    assert ids[1] in out

    fresh = redis_cluster.crawl_ids("cancel")[2]
    run_store(url, fresh, lambda store: store.exists())
    assert _run(url, capsys, "cancel", fresh)[0] == 0
    with redis_cluster.client() as client:
        assert client.hget(CrawlKeys(fresh).meta, "state") == b"cancelled"

    code, out, err = _run(url, capsys, "purge", "--dry-run", ids[2])
    assert code == 0 and "would purge" in out, err
    for cid in (ids[2], fresh):
        code, out, err = _run(url, capsys, "purge", cid)
        assert code == 0 and "purged crawl" in out, err
        assert sum(_keys_by_master(redis_cluster, cid).values()) == 0
        with redis_cluster.client() as client:
            assert not client.sismember(CRAWLS_KEY, cid)


def test_a_script_publish_on_one_master_wakes_a_listener_on_another(
        redis_cluster: LocalCluster) -> None:
    seed = f"127.0.0.1:{redis_cluster.nodes[0].port}"  # the listener subscribes on the first seed
    crawl_id = next(c for c in redis_cluster.crawl_ids("wake") if redis_cluster.master_of(c) != seed)
    channel = CrawlKeys(crawl_id).queue

    async def check() -> list[str]:
        got: list[str] = []
        woken = asyncio.Event()

        def on_work(kind: str) -> None:
            got.append(kind)
            woken.set()

        listener = asyncio.ensure_future(listen_for_work(redis_cluster.url, channel, on_work))
        client: Any = redis_from_url(redis_cluster.url)
        try:
            for _ in range(50):  # until subscribed: a message before that is not delivered
                await client.eval("return redis.call('PUBLISH', KEYS[1], 'work')", 1, channel)
                try:
                    await asyncio.wait_for(woken.wait(), 0.1)
                    break
                except asyncio.TimeoutError:
                    continue
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await client.aclose()
        return got

    assert "work" in asyncio.run(check())


def test_redis_facts_of_the_crawls_master_and_of_all(redis_cluster: LocalCluster) -> None:
    crawl_id = redis_cluster.crawl_ids("facts")[1]

    async def facts(store: CrawlStore) -> tuple[dict[str, Any], dict[str, Any]]:
        return (await redis_facts(store.client, store.keys.meta), await redis_facts(store.client))

    own, every = run_store(redis_cluster.url, crawl_id, facts)
    assert 0 < own["used_memory"] < every["used_memory"]
    assert every["script_calls"] >= own["script_calls"] > 0
    run_client(redis_cluster.url, lambda c: c.delete(*CrawlKeys(crawl_id).all()))


@pytest.mark.slow
def test_chaos_on_the_cluster(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    chaos_crawl(redis_cluster, redis_cluster.crawl_ids("chaos")[1], tmp_path)


def test_plain_url_of_one_node_is_not_a_cluster_client(redis_cluster: LocalCluster) -> None:
    client = redis_from_url(f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0", sync=True)
    try:
        assert not is_cluster(client) and isinstance(client, redis.Redis)
    finally:
        client.close()


@pytest.mark.slow
def test_the_api_runs_a_crawl_job_and_a_scrape_on_the_cluster(
        redis_cluster: LocalCluster, tmp_path: Path) -> None:
    """``statecrawl serve`` (one scrape worker) and ``statecrawl worker --jobs 1`` given the
    cluster URL: a crawl job completes with each page once, and a scrape answers."""
    from tests.api._serve import http, serve
    from tests.api.test_jobs_exec import start_job_workers, stop

    url = redis_cluster.url
    jobs = start_job_workers(url, tmp_path / "jobs.log", slots=1)
    try:
        with DemoSite(pages=30) as site, serve(url, tmp_path, "--scrape-workers", "1") as api:
            status, started, _ = http("POST", f"{api.url}/v2/crawl", {"url": site.url + "/", "limit": 12})
            assert status == 200, (started, api.output()[-4000:])
            deadline = time.monotonic() + 90
            while True:
                status, body, _ = http("GET", f"{api.url}/v2/crawl/{started['id']}")
                assert status == 200, body
                if body["status"] != "scraping":
                    break
                assert time.monotonic() < deadline, (body, (tmp_path / "jobs.log").read_text()[-3000:])
                time.sleep(0.5)
            assert body["status"] == "completed", body
            sources = [d["metadata"]["sourceURL"] for d in body["data"]]
            # the limit counts requests admitted; a redirect off the site or a failed one
            # leaves no document
            assert len(sources) == len(set(sources)) == body["completed"], sources
            assert 6 <= len(sources) <= 12, sources
            status, scraped, _ = http("POST", f"{api.url}/v2/scrape",
                                      {"url": site.url + "/page/1.html"}, timeout=60)
            assert status == 200 and scraped["success"], (scraped, api.output()[-3000:])
            assert scraped["data"]["markdown"]
    finally:
        stop(jobs)


_WATCHDOG_THEN_DIE = """
import os, sys
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.liveness import start_watchdog
start_watchdog(sys.argv[1], CrawlKeys(sys.argv[2]), "w")
os._exit(0)  # as a worker dies: no leave of its own
"""


def test_the_watchdog_and_the_heartbeat_work_on_a_crawl_of_another_master(
        redis_cluster: LocalCluster, tmp_path: Path) -> None:
    seed = f"127.0.0.1:{redis_cluster.nodes[0].port}"
    crawl_id = next(c for c in redis_cluster.crawl_ids("live") if redis_cluster.master_of(c) != seed)
    keys = CrawlKeys(crawl_id)

    async def lease_two(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req(u) for u in "abc"])
        await store.lease("w", 2, check_finished=False)

    run_store(redis_cluster.url, crawl_id, lease_two)
    subprocess.run([sys.executable, "-c", _WATCHDOG_THEN_DIE, redis_cluster.url, crawl_id],
                   cwd=ROOT, check=True, timeout=60)
    with redis_cluster.client() as client:
        deadline = time.monotonic() + 15
        while client.hlen(keys.leases) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen(keys.leases) == 0
        assert client.hget(keys.stats, "reclaimed") == b"2"

        loop = asyncio.new_event_loop()
        events: list[str] = []
        beat = HeartbeatThread(url=redis_cluster.url, keys=keys, worker="beat", interval=0.05,
                               timeout=0.5, loop=loop, on_reclaimed=lambda n, d: events.append("r"),
                               on_forgotten=lambda: events.append("f"),
                               on_recovered=lambda: events.append("ok"))
        beat.start()
        try:
            scores = []
            for _ in range(5):
                time.sleep(0.15)
                scores.append(client.zscore(keys.workers, "beat"))
            assert all(s is not None for s in scores) and scores[0] < scores[-1], scores
        finally:
            beat.stop()
            beat.join(5)
            loop.close()
        assert not beat.is_alive() and events == []


def test_metrics_exposition_reads_crawls_of_every_master(
        redis_cluster: LocalCluster, crawled: tuple[list[str], DemoSite, Path]) -> None:
    ids = crawled[0]

    async def body(client: Any) -> bytes:
        return await exposition(client)

    text = run_client(redis_cluster.url, body).decode()
    for cid in ids[:2]:  # (the third was purged by the CLI test)
        assert f'crawl="{cid}"' in text, text[:2000]
