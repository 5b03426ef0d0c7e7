"""STATECRAWL_REDIS_WAIT_REPLICAS on a real master and a real replica (``--replicaof``).

A lease or commit that WAITed is on the replica when it returns; a replayed commit
waits for the replica too; a replica that does not answer makes the WAIT
short after its timeout (counted, the write kept on the master); a master that
lost its scripts loads them again; bad settings are refused. A crawl failing over
on a Redis Cluster: tests/cluster/test_failover.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.replication import ReplicaWait
from statecrawl.frontier.store import CrawlStore, PendingItem
from tests.conftest import RedisServer, free_port, run_client, scrapy_crawl, worker_env
from tests.frontier.test_liveness import req


@pytest.fixture(scope="module")
def replica(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A replica of the session's Redis, in sync before the tests run."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("replica"),
                         args=("--replicaof", "127.0.0.1", str(redis_server.port))).start()
    client = server.client()
    deadline = time.monotonic() + 20
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    client.close()
    yield server
    server.stop()


def _run(url: str, crawl_id: str, wait: ReplicaWait | None, body):  # type: ignore[no-untyped-def]
    async def main(client):  # type: ignore[no-untyped-def]
        store = CrawlStore(client, crawl_id)
        store.replica_wait = wait
        await store.open_crawl(spider="test")
        return await body(store)

    return run_client(url, main)


def test_a_waited_commit_and_lease_are_on_the_replica_when_they_return(
        redis_server: RedisServer, replica: RedisServer, crawl_id: str) -> None:
    wait = ReplicaWait(1, 5.0)
    k = f"sc:{{{crawl_id}}}:"
    mirror = replica.client()
    seen: dict[str, object] = {}

    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="exact", requests=[req(u) for u in "abcd"],
                           items=[PendingItem("http://x/1", False, b'{"url": "http://x/1"}')])
        # read from the replica at once, before anything else happens
        seen["items"] = mirror.hkeys(k + "items")
        seen["enqueued"] = mirror.hget(k + "stats", "enqueued")
        _, pairs = await store.lease("w", 2, check_finished=False)
        seen["leased"] = sorted(pairs)
        seen["leases"] = mirror.hkeys(k + "leases")
        out = await store.commit("w", dedupe="exact", acks=[pairs[0][0]], want=1)
        seen["acked"] = out.acked
        seen["leases_after"] = mirror.hkeys(k + "leases")

    try:
        _run(redis_server.url, crawl_id, wait, body)
    finally:
        mirror.close()
    assert seen["items"] == [b"http://x/1"] and seen["enqueued"] == b"4", seen
    ids = [i.encode() for i, _ in seen["leased"]]  # type: ignore[union-attr]
    assert len(ids) == 2 and sorted(seen["leases"]) == ids, seen  # type: ignore[arg-type]
    # the ack and the lease of one more, both on the replica
    assert seen["acked"] == 1 and ids[0] not in seen["leases_after"], seen  # type: ignore[operator]
    assert len(seen["leases_after"]) == 2, seen  # type: ignore[arg-type]
    assert wait.waits == 4 and wait.short == 0  # open, commit, lease, commit (with its lease)


def test_a_replayed_commit_writes_so_its_wait_covers_it(
        redis_server: RedisServer, replica: RedisServer, crawl_id: str) -> None:
    """A commit applied on the master but not replicated (replica stopped), sent again
    on a new connection (its reply was lost): the replay must wait for the replica
    too (commit.lua writes its token again on a replay, so this holds whatever a
    version of Redis makes of WAIT on a connection that wrote nothing)."""
    assert replica.proc is not None
    wait = ReplicaWait(1, 0.3)
    results = []

    async def first(store: CrawlStore) -> None:  # no WAIT: the reply "lost"
        results.append(await store.commit("w", dedupe="exact", requests=[req("a")], token="t1"))

    async def again(store: CrawlStore) -> None:  # a new connection, as after a reconnect
        await store.client.connection_pool.disconnect()  # (the one open_crawl wrote on)
        store.replica_wait = wait
        results.append(await store.commit("w", dedupe="exact", requests=[req("a")], token="t1"))

    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        _run(redis_server.url, crawl_id, None, first)
        _run(redis_server.url, crawl_id, None, again)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    assert results[1] == results[0] and results[0].enqueued == 1  # applied once
    assert (wait.waits, wait.short) == (1, 1)  # the replay waited, and the replica was away


def test_a_silent_replica_makes_the_wait_short_and_the_write_stays(
        redis_server: RedisServer, replica: RedisServer, crawl_id: str) -> None:
    crawler = get_crawler()
    stats = crawler.stats
    wait = ReplicaWait(1, 0.3, stats)
    assert replica.proc is not None
    took: list[float] = []

    async def body(store: CrawlStore) -> None:
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await store.commit("w", dedupe="exact", requests=[req("s")])
            took.append(time.monotonic() - started)
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)

    _run(redis_server.url, crawl_id, wait, body)
    assert took[0] >= 0.25, took  # WAIT waited for its timeout
    assert wait.short == 1 and stats.get_value("statecrawl/redis_wait_short") == 1
    master = redis_server.client()
    try:
        assert master.hget(f"sc:{{{crawl_id}}}:stats", "enqueued") == b"1"  # applied anyway
    finally:
        master.close()


def test_a_master_without_the_script_loads_it(
        redis_server: RedisServer, replica: RedisServer, crawl_id: str) -> None:
    wait = ReplicaWait(1, 5.0)

    async def body(store: CrawlStore) -> int:
        await store.client.script_flush()
        return (await store.commit("w", dedupe="exact", requests=[req("n")])).enqueued

    assert _run(redis_server.url, crawl_id, wait, body) == 1
    assert wait.waits == 2 and wait.short == 0


def test_settings() -> None:
    assert ReplicaWait.from_settings(Settings()) is None
    made = ReplicaWait.from_settings(Settings({"STATECRAWL_REDIS_WAIT_REPLICAS": "2",
                                               "STATECRAWL_REDIS_WAIT_TIMEOUT": "0.25"}))
    assert made is not None and (made.replicas, made.timeout) == (2, 0.25)
    for bad in ({"STATECRAWL_REDIS_WAIT_REPLICAS": "-1"},
                {"STATECRAWL_REDIS_WAIT_REPLICAS": "many"},
                {"STATECRAWL_REDIS_WAIT_REPLICAS": "1", "STATECRAWL_REDIS_WAIT_TIMEOUT": "0"}):
        with pytest.raises(ConfigError, match="STATECRAWL_REDIS_WAIT"):
            ReplicaWait.from_settings(Settings(bad))


def test_a_worker_that_waits_for_a_missing_replica_says_so(
        tmp_path: Path, crawl_id: str) -> None:
    """A crawl on a Redis with no replica, asked to wait for one: it completes (a missing
    replica does not stop a crawl), its stats count every short WAIT, and it warns."""
    alone = RedisServer(free_port(), tmp_path / "alone")
    alone.dir.mkdir()
    alone.start()
    try:
        with DemoSite(pages=5) as site:
            done = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                                 "-s", "STATECRAWL_REDIS_WAIT_REPLICAS=1",
                                 "-s", "STATECRAWL_REDIS_WAIT_TIMEOUT=0.05"],
                                worker_env(alone.url, tmp_path / "out"), timeout=120)
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-3000:]
        assert "only 0 of 1 replicas confirmed a write" in log, log[-3000:]
        assert "'statecrawl/redis_wait_short':" in log, log[-3000:]
        client = alone.client()
        assert client.hlen(f"sc:{{{crawl_id}}}:items") == len(site.expected_urls())
        client.close()
    finally:
        alone.stop()

