"""crawl_snapshot: one crawl's facts, read from a real Redis after a real crawl."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.liveness import HeartbeatThread
from statecrawl.frontier.store import CrawlStore, heartbeat_keys, script_source
from statecrawl.observe import crawl_snapshot
from tests.conftest import RedisServer, run_store, scrapy_crawl, worker_env


def test_a_crawls_snapshot_has_its_rates_status_mix_hosts_and_errors(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-a", "limit=100", "-s", "RETRY_TIMES=0"],
                          worker_env(redis_server.url, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]  # type: ignore[union-attr]

    async def body(store: CrawlStore) -> dict[str, Any]:
        return await crawl_snapshot(store, top=3)

    snap = run_store(redis_server.url, crawl_id, body)
    json.dumps(snap)  # JSON-ready
    assert snap["state"] == "finished" and snap["done"] > 5
    assert snap["progress"] == 1.0  # finished under its limit
    assert snap["rates"]["pages_per_s"]["1m"] > 0 and set(snap["rates"]["items_per_s"]) == {
        "1m", "5m", "15m"}
    minute = snap["last_minute"]
    assert minute["status"]["2xx"] > 0 and minute["status"]["5xx"] >= 1  # the demo's error page
    assert minute["fetches"] == sum(minute["status"].values()) + sum(minute["errors"].values())
    assert sum(minute["latency"].values()) == sum(minute["status"].values())
    assert len(snap["series"]) == 90 and snap["series"][0]["t"] < snap["series"][-1]["t"]
    assert sum(b["pages"] for b in snap["series"]) == snap["stats"]["acked"]
    host = site.url.split("//")[1].split(":")[0]
    assert [h["host"] for h in snap["hosts"]] == [host]  # not polite: the busiest hosts
    assert snap["hosts"][0]["fetches_1m"] == minute["fetches"] and snap["hosts"][0]["errors_1m"] >= 1
    assert snap["workers"] == [] and snap["leases"]["in_flight"] == 0  # all gone
    assert snap["dupefilter"]["entries"] == snap["seen"] > 0
    assert snap["redis"]["used_memory"] > 0 and snap["redis"]["script_calls"] > 0
    assert snap["dead_letters"] == []


def test_a_workers_heartbeat_tells_its_leases_and_leave_forgets_it(
        redis_server: RedisServer, crawl_id: str) -> None:
    keys = CrawlKeys(crawl_id)
    loop = asyncio.new_event_loop()
    told = {"host": "box-1", "pid": 42, "oldest_lease_s": 2.5, "evil": ["not", "plain"]}
    thread = HeartbeatThread(url=redis_server.url, keys=keys, worker="w1", interval=0.05,
                             timeout=5, loop=loop, on_reclaimed=lambda n, d: None,
                             on_forgotten=lambda: None, on_recovered=lambda: None,
                             info=lambda: json.dumps(told))
    client = redis.Redis(port=redis_server.port)
    client.hset(keys.meta, mapping={"state": "running", "epoch": "1"})
    client.hset(keys.leases, mapping={"7": "w1 0", "8": "w1 0", "9": "gone 0"})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while client.hget(keys.tokens, "w1|info") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        snap = run_store(redis_server.url, crawl_id, lambda s: crawl_snapshot(s))
    finally:
        thread.stop()
        thread.join(5)
        loop.close()
    [worker] = snap["workers"]
    assert worker["id"] == "w1" and worker["leases"] == 2 and 0 <= worker["heartbeat_age"] < 5
    assert (worker["host"], worker["pid"], worker["oldest_lease_s"]) == ("box-1", 42, 2.5)
    assert "evil" not in worker and snap["leases"]["oldest_age"] == 2.5
    leave = client.register_script(script_source("host_done.lua", "requeue_owned.lua", "leave.lua"))
    assert leave(keys=heartbeat_keys(keys), args=["w1"]) == 2
    assert client.hget(keys.tokens, "w1|info") is None
    client.close()
