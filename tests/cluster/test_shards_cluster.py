"""One crawl spread over the masters of the session's cluster (STATECRAWL_SHARDS).

A crawl id is picked whose 8 shards cover all three masters; two ``scrapy crawl
site`` workers crawl it; every page is stored and exported once, each master holds
some of the crawl's keys and served some of its pages, and ``statecrawl status``
and ``purge`` see and remove every shard.
"""

from __future__ import annotations

import collections
import json
import uuid
from pathlib import Path

import pytest

from statecrawl.cli import main as cli
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.dupefilter import open_crawl_dupefilter
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.lifecycle import crawl_pattern
from statecrawl.frontier.shards import shard_of_host
from tests.cluster.conftest import LocalCluster
from statecrawl.frontier.store import CrawlStore
from tests.conftest import run_client, scrapy_crawl, worker_env
from tests.frontier.test_chaos import check_every_page_once
from tests.frontier.test_shards import req
from tests.frontier.test_shards_budget import check_host_delays, polite_hosts_crawl

SHARDS = 8


def _spread_id(cluster: LocalCluster) -> tuple[str, dict[int, str]]:
    """A crawl id whose shards sit on every master (the first one tried, with the shards
    placed by slot slices), and each shard's master."""
    masters = set(cluster.masters())
    with cluster.client() as client:
        for i in range(500):
            cid = f"spread-{uuid.uuid4().hex[:6]}-{i}"
            where = {s: client.get_node_from_key(CrawlKeys(cid, s, SHARDS).meta).name for s in range(SHARDS)}
            if set(where.values()) == masters:
                return cid, where
    raise AssertionError("no crawl id spreads over every master")


@pytest.mark.slow
def test_a_sharded_crawl_spreads_over_the_masters(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    crawl_id, where = _spread_id(redis_cluster)
    with DemoSite(pages=200) as site:
        procs = [scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                               "-s", "RETRY_TIMES=0", "-s", f"STATECRAWL_SHARDS={SHARDS}"],
                              worker_env(redis_cluster.url, tmp_path / f"w{i}"), wait=False)
                 for i in range(2)]
        logs = [p.communicate(timeout=180)[0] for p in procs]  # type: ignore[union-attr]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
        check_every_page_once(redis_cluster, crawl_id, site, tmp_path / "export", context="cluster shards:")
    acked_by_master: dict[str, int] = {}
    with redis_cluster.client() as client:
        for shard, master in where.items():
            acked = int(client.hget(CrawlKeys(crawl_id, shard, SHARDS).stats, "acked") or 0)
            acked_by_master[master] = acked_by_master.get(master, 0) + acked
    assert all(n > 0 for n in acked_by_master.values()) and len(acked_by_master) == 3, acked_by_master
    # the 8 shards fall on the masters' slot ranges evenly (statecrawl/frontier/_slots.py)
    per_master = collections.Counter(where.values())
    assert len(per_master) == 3 and 2 <= min(per_master.values()) <= max(per_master.values()) <= 4, per_master
    assert cli(["--redis-url", redis_cluster.url, "status", crawl_id]) == 0
    assert cli(["--redis-url", redis_cluster.url, "purge", crawl_id]) == 0
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            if client.info("replication")["role"] == "master":
                assert list(client.scan_iter(match=crawl_pattern(crawl_id))) == [], node.port
        finally:
            client.close()


def test_a_polite_crawl_sharded_by_host_on_the_cluster(
        redis_cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crawl_id = f"polite-{uuid.uuid4().hex[:8]}"
    check_host_delays(polite_hosts_crawl(redis_cluster.url, crawl_id, tmp_path, SHARDS))
    hosts = [f"127.0.0.{i}" for i in (1, 2, 3)]
    # `statecrawl hosts` reads every host's shard, and changes a host in its own shard
    assert cli(["--redis-url", redis_cluster.url, "hosts", crawl_id, "--host", "127.0.0.2",
                "--delay", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["polite"] and report["delay"] == 0.2 and report["hosts"] == 3, report
    rows = {r["host"]: r for r in report["top"]}
    assert set(rows) == set(hosts) and rows["127.0.0.2"]["delay"] == {"override": 0.5}, rows
    assert all(r["queued"] == 0 and r["in_flight"] == 0 for r in rows.values()), rows
    with redis_cluster.client() as client:
        k = CrawlKeys(crawl_id, shard_of_host("127.0.0.2", SHARDS), SHARDS)
        assert client.hget(k.hosts, "127.0.0.2|d") == b"500"
        assert client.hget(f"sc:{{{crawl_id}}}:meta", "state") == b"finished"
    assert cli(["--redis-url", redis_cluster.url, "purge", crawl_id]) == 0


def test_a_limit_and_a_bloom_filter_over_the_masters(redis_cluster: LocalCluster) -> None:
    """The limit's grants (shard 0) and the shards' checks and filters, each call in its
    own slot on its own master (no CROSSSLOT), admit exactly the limit."""
    crawl_id, where = _spread_id(redis_cluster)

    async def main(client):  # type: ignore[no-untyped-def]
        store = CrawlStore(client, crawl_id)
        await store.open_crawl(spider="t", limit=40, shards=SHARDS)
        await open_crawl_dupefilter(store, "bloom", capacity=8000, error_rate=1e-4)
        for b in range(6):  # batches that overlap: 10 new links each, 5 seen before
            urls = [f"http://x/{b * 10 + j - 5}" for j in range(15) if b * 10 + j >= 5]
            await store.commit("w", dedupe="bloom", requests=[req(u) for u in urls])
        return await store.status()

    status = run_client(redis_cluster.url, main)
    assert status["stats"]["admitted"] == 40 == status["queued"], status
    with redis_cluster.client() as client:
        assert int(client.hget(f"sc:{{{crawl_id}}}:meta", "quota_out")) == 40
        on = {client.get_node_from_key(CrawlKeys(crawl_id, s, SHARDS).bloom).name
              for s in range(SHARDS) if client.exists(CrawlKeys(crawl_id, s, SHARDS).bloom)}
    assert on == set(where.values())  # a filter in every shard, on every master
    assert cli(["--redis-url", redis_cluster.url, "purge", crawl_id]) == 0
