"""A crawl's master dies mid-crawl: its replica is promoted and no page is lost.

A cluster of its own (3 masters + 3 replicas, tests/cluster/conftest.py), so the
session's cluster keeps its shape. Two ``scrapy crawl site`` workers run with
``STATECRAWL_REDIS_WAIT_REPLICAS=1`` (statecrawl/frontier/replication.py); once a
tenth of the pages are stored, the crawl's master is SIGKILLed. The cluster
promotes its replica (``cluster-node-timeout`` 3 s); the dead node is started
again from its ``nodes.conf`` and joins as the new master's replica, as an
operator's restart would. The crawl must finish with every page stored and
exported exactly once, its workers exiting 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statecrawl.demo.site import DemoSite
from tests.cluster.conftest import LocalCluster
from tests.conftest import RedisServer, worker_env
from tests.frontier.test_chaos import Worker, check_every_page_once

PAGES = 400


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        yield cluster.start(tmp_path_factory.mktemp("failover"))
    finally:
        cluster.stop()


def _role(node: RedisServer) -> str:
    client = node.client()
    try:
        return str(client.info("replication")["role"])
    except Exception:  # noqa: BLE001 - a node starting or stopped: no role yet
        return "?"
    finally:
        client.close()


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_master_killed_mid_crawl_loses_no_page(own_cluster: LocalCluster, tmp_path: Path) -> None:
    crawl_id = own_cluster.crawl_ids("failover")[0]
    master_port = int(own_cluster.master_of(crawl_id).rsplit(":", 1)[1])
    master = next(n for n in own_cluster.nodes if n.port == master_port)
    replicas_before = [n for n in own_cluster.nodes if _role(n) == "slave"]
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=PAGES, delay=0.05) as site:
        args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0",
                "-s", "CONCURRENT_REQUESTS=4", "-s", "STATECRAWL_REDIS_WAIT_REPLICAS=1",
                "-s", "STATECRAWL_REDIS_WAIT_TIMEOUT=0.5"]
        workers = [Worker(args, worker_env(own_cluster.url, tmp_path / name), tmp_path / f"{name}.log")
                   for name in ("a", "b")]
        try:
            with own_cluster.client() as client:
                _wait(lambda: client.hlen(k + "items") >= PAGES // 10
                      or any(w.proc.poll() is not None for w in workers), 90, "a tenth of the pages")
                assert all(w.proc.poll() is None for w in workers), [w.log() for w in workers]
                stored_at_kill = client.hlen(k + "items")
            assert stored_at_kill < PAGES // 2, stored_at_kill  # mid-crawl, not at its end
            master.stop("kill")
            # its replica takes over: one of the former replicas is a master now
            _wait(lambda: any(_role(n) == "master" for n in replicas_before), 30, "a promotion")
            # the dead node comes back and follows the new master
            again = RedisServer(master.port, master.dir, args=master.args).start()
            own_cluster.nodes[own_cluster.nodes.index(master)] = again
            _wait(lambda: _role(again) == "slave", 30, "the old master to rejoin as a replica")
            for w in workers:
                w.proc.wait(180)
        finally:
            for w in workers:
                w.stop()
        logs = "\n".join(w.log(6000) for w in workers)
        assert [w.proc.returncode for w in workers] == [0, 0], logs
        assert any("Spider closed (finished)" in w.text() for w in workers), logs
        # the workers saw the failover (and waited it out), they did not miss it
        assert any("statecrawl/redis_errors" in w.text() or "Redis is reachable again" in w.text()
                   for w in workers), logs
        check_every_page_once(own_cluster, crawl_id, site, tmp_path / "export",
                              context=f"killed at {stored_at_kill} pages:")
