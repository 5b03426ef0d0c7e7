"""observe.metrics: the Prometheus text of real crawls in a real Redis, parsed back.

Each test runs on a Redis database of its own (db 9 of the session's private server,
emptied first), so counts over the whole Redis (crawls by state, crawl errors) are exact.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis as AsyncRedis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.hosts import Budget, HostBudgetStore
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.liveness import HeartbeatThread
from statecrawl.frontier.rolling import window
from statecrawl.frontier.store import CrawlStore
from statecrawl.observe._families import SPECS
from statecrawl.observe.metrics import MetricsLimits, exposition, select_crawls
from tests.conftest import ROOT, RedisServer, scrapy_crawl, worker_env

DB = 9
ALL = MetricsLimits(max_crawls=1000, top_hosts=10)


@pytest.fixture
def db_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis(port=redis_server.port, db=DB)
    client.flushdb()  # this test's own database of the private server
    client.close()
    yield f"redis://127.0.0.1:{redis_server.port}/{DB}"


def scrape(url: str, limits: MetricsLimits = ALL) -> tuple[str, dict[str, Any]]:
    """(the text, {sample name: {frozenset(labels.items()): value}})."""
    async def main() -> bytes:
        client = AsyncRedis.from_url(url)
        try:
            return await exposition(client, limits)
        finally:
            await client.aclose()

    text = asyncio.run(main()).decode()
    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return text, samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return float(samples[name][frozenset(labels.items())])


def rolling(url: str, crawl_id: str) -> dict[str, int]:
    async def main() -> dict[str, int]:
        client = AsyncRedis.from_url(url)
        try:
            return await window(client, CrawlKeys(crawl_id), 60)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_finished_crawls_counters_match_redis(db_url: str, site: DemoSite, crawl_id: str,
                                                tmp_path: Path) -> None:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-a", "limit=40", "-s", "RETRY_TIMES=0"], worker_env(db_url, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]  # type: ignore[union-attr]
    client = redis.Redis.from_url(db_url)
    stats = {k.decode(): int(v) for k, v in client.hgetall(CrawlKeys(crawl_id).stats).items()}
    seen = client.scard(CrawlKeys(crawl_id).seen) or stats.get("seen", 0)
    client.close()
    before = rolling(db_url, crawl_id)
    text, samples = scrape(db_url)
    after = rolling(db_url, crawl_id)  # a 10 s bucket may leave the minute meanwhile
    c = {"crawl": crawl_id}

    assert value(samples, "statecrawl_pages_total", **c) == stats["acked"] > 5
    assert value(samples, "statecrawl_items_total", **c) == stats["items"]
    assert value(samples, "statecrawl_requests_enqueued_total", **c) == stats["enqueued"]
    assert value(samples, "statecrawl_requests_limit_dropped_total", **c) == stats.get(
        "limit_dropped", 0)
    assert value(samples, "statecrawl_leases_reclaimed_total", **c) == 0
    assert value(samples, "statecrawl_queued_requests", **c) == 0
    assert value(samples, "statecrawl_leases_in_flight", **c) == 0
    assert value(samples, "statecrawl_workers", **c) == 0
    assert value(samples, "statecrawl_dupefilter_entries", **c) == seen > 0
    assert value(samples, "statecrawl_crawl_progress_ratio", **c) == 1.0  # finished
    assert value(samples, "statecrawl_crawl_info", crawl=crawl_id, state="finished",
                 spider="site", dupefilter="exact") == 1
    assert value(samples, "statecrawl_crawls", state="finished") == 1
    assert value(samples, "statecrawl_metrics_crawls_exported") == 1
    assert value(samples, "statecrawl_metrics_crawl_errors") == 0

    # the last minute: what the rolling buckets hold
    classes = {"2xx", "3xx", "4xx", "5xx", "other"}
    got = {k: v for k, v in samples["statecrawl_responses_last_minute"].items()}
    for fields in (before, after):
        want = {frozenset({"crawl": crawl_id, "status_class": k}.items()): float(
            fields.get(f"s:{k}", 0)) for k in classes}  # every class, 0 included
        if got == want:
            break
    else:
        raise AssertionError(f"{got} is neither {before} nor {after}")
    assert want[frozenset({**c, "status_class": "5xx"}.items())] >= 1  # the demo's error page
    responses = sum(got.values())
    assert value(samples, "statecrawl_fetch_latency_seconds_last_minute_bucket", **c,
                 le="+Inf") == responses
    buckets = [(float(dict(k)["le"]), v) for k, v in
               samples["statecrawl_fetch_latency_seconds_last_minute_bucket"].items()]
    counts = [v for _le, v in sorted(buckets)]
    assert counts == sorted(counts) and len(counts) == 9  # cumulative, 8 bounds and +Inf
    host = site.url.split("//")[1].split(":")[0]
    assert value(samples, "statecrawl_host_fetches_last_minute", **c, host=host) == value(
        samples, "statecrawl_fetches_last_minute", **c) >= responses
    assert value(samples, "statecrawl_pages_per_second", **c, window="1m") > 0
    assert {dict(k)["window"] for k in samples["statecrawl_pages_per_second"]} == {
        "1m", "5m", "15m"}
    assert value(samples, "statecrawl_redis_used_memory_bytes") > 0
    assert value(samples, "statecrawl_redis_script_calls_total") > 0
    assert 0 < value(samples, "statecrawl_redis_ping_seconds") < 5
    assert "# TYPE statecrawl_pages_total counter" in text


def test_a_live_worker_and_a_hostile_host_are_escaped_not_obeyed(db_url: str, crawl_id: str) -> None:
    keys = CrawlKeys(crawl_id)
    evil_host = 'ev"il\nhost\\} 1\nstatecrawl_workers{crawl="x"} 99'
    evil_worker = 'w"1\n#TYPE\\x'  # no space: a lease's value is "<worker> <...>"
    told = {"host": 'box"1\n', "pid": 42, "oldest_lease_s": 2.5}

    async def prepare() -> tuple[int, int, int]:
        client = AsyncRedis.from_url(db_url)
        try:
            store = CrawlStore(client, crawl_id)
            await store.open_crawl(spider="test")
            budget = HostBudgetStore(client, keys)
            await budget.configure(Budget(delay=0.5))
            await budget.slot(evil_host)
            await budget.set_override(evil_host, delay=2.0)
            await budget.backoff(evil_host, None, 1.0, 60.0)
            return await budget.backoff(evil_host, None, 1.0, 60.0)
        finally:
            await client.aclose()

    _until, _now, level = asyncio.run(prepare())
    assert level >= 1
    client = redis.Redis.from_url(db_url)
    client.hset(keys.leases, mapping={"7": f"{evil_worker} 0", "8": f"{evil_worker} 0"})
    loop = asyncio.new_event_loop()
    thread = HeartbeatThread(url=db_url, keys=keys, worker=evil_worker, interval=0.05, timeout=5,
                             loop=loop, on_reclaimed=lambda n, d: None, on_forgotten=lambda: None,
                             on_recovered=lambda: None, info=lambda: json.dumps(told))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while client.hget(keys.tokens, f"{evil_worker}|info") is None:
            assert time.monotonic() < deadline, "no heartbeat info in 10 s"
            time.sleep(0.05)
        text, samples = scrape(db_url)
    finally:
        thread.stop()
        thread.join(5)
        loop.close()
        client.close()
    c, w = {"crawl": crawl_id}, {"crawl": crawl_id, "worker": evil_worker}
    assert value(samples, "statecrawl_workers", **c) == 1
    assert "x" not in {dict(k)["crawl"] for k in samples["statecrawl_workers"]}  # not injected
    assert 0 <= value(samples, "statecrawl_worker_heartbeat_age_seconds", **w) < 5
    assert value(samples, "statecrawl_worker_leases", **w) == 2
    assert value(samples, "statecrawl_worker_oldest_lease_age_seconds", **w) == 2.5
    assert value(samples, "statecrawl_worker_info", **w, host='box"1\n', pid="42") == 1
    assert value(samples, "statecrawl_lease_oldest_age_seconds", **c) == 2.5
    h = {"crawl": crawl_id, "host": evil_host}
    assert value(samples, "statecrawl_host_backoff_level", **h) == level
    assert value(samples, "statecrawl_host_delay_seconds", **h, source="override") == 2.0
    assert value(samples, "statecrawl_host_queued_requests", **h) == 0
    assert value(samples, "statecrawl_hosts", **c) == 1
    assert value(samples, "statecrawl_crawls", state="running") == 1
    # every line is a comment or one sample: nothing read from Redis broke a line
    for line in text.splitlines():
        assert line.startswith("# ") or re.fullmatch(r'[a-z_]+(\{.*\})? \S+', line), line


def test_a_malformed_crawl_is_skipped_and_counted_the_others_exported(
        db_url: str, crawl_id: str) -> None:
    client = redis.Redis.from_url(db_url)
    good, bad, gone = crawl_id, crawl_id + "-bad", crawl_id + "-gone"
    for cid in (good, bad):
        client.hset(CrawlKeys(cid).meta, mapping={"state": "running", "created_at": "1"})
        client.sadd(CRAWLS_KEY, cid)
    client.hset(CrawlKeys(good).stats, mapping={"acked": 7})
    client.set(CrawlKeys(bad).stats, "not a hash")  # WRONGTYPE for the snapshot
    client.sadd(CRAWLS_KEY, gone, "../not-an-id")  # no meta (expired), and not an id at all
    client.close()
    _text, samples = scrape(db_url)
    assert value(samples, "statecrawl_pages_total", crawl=good) == 7
    assert {dict(k)["crawl"] for k in samples["statecrawl_pages_total"]} == {good}
    assert value(samples, "statecrawl_metrics_crawl_errors") == 1
    assert value(samples, "statecrawl_metrics_crawls_exported") == 1
    assert value(samples, "statecrawl_crawls", state="running") == 2


def test_crawls_are_chosen_not_ended_first_newest_first_and_capped(db_url: str) -> None:
    client = redis.Redis.from_url(db_url)
    now = float(client.time()[0])
    rows = {"old-run": ("running", 100, None), "new-run": ("running", 200, None),
            "fresh-end": ("finished", 300, now - 10), "stale-end": ("finished", 50, now - 3600),
            "cancelled": ("cancelled", 400, None), "odd": ("weird\nstate", 150, None)}
    for cid, (state, created, finished) in rows.items():
        meta = {"state": state, "created_at": created}
        if finished is not None:
            meta["finished_at"] = finished
        client.hset(CrawlKeys(cid).meta, mapping=meta)
        client.sadd(CRAWLS_KEY, cid)
    client.close()

    async def choose(n: int) -> Any:
        c = AsyncRedis.from_url(db_url)
        try:
            return await select_crawls(c, n)
        finally:
            await c.aclose()

    every = asyncio.run(choose(10))
    assert every.crawl_ids == ["new-run", "odd", "old-run", "fresh-end"]
    assert dict(every.states) == {"running": 2, "finished": 2, "cancelled": 1, "other": 1}
    two = asyncio.run(choose(2))
    assert (two.crawl_ids, two.omitted) == (["new-run", "odd"], 2)
    _text, samples = scrape(db_url, MetricsLimits(max_crawls=2, top_hosts=1))
    assert value(samples, "statecrawl_metrics_crawls_omitted") == 2
    assert {dict(k)["crawl"] for k in samples["statecrawl_pages_total"]} == {"new-run", "odd"}
    assert value(samples, "statecrawl_crawl_info", crawl="odd", state="other", spider="",
                 dupefilter="exact") == 1


def test_limits_come_from_the_environment_and_bad_ones_say_which() -> None:
    assert MetricsLimits.from_env({}) == MetricsLimits(50, 10)
    assert MetricsLimits.from_env({"STATECRAWL_METRICS_MAX_CRAWLS": "3",
                                   "STATECRAWL_METRICS_TOP_HOSTS": ""}) == MetricsLimits(3, 10)
    with pytest.raises(Exception, match="STATECRAWL_METRICS_TOP_HOSTS='-1'"):
        MetricsLimits.from_env({"STATECRAWL_METRICS_TOP_HOSTS": "-1"})


def test_the_readme_documents_every_metric_and_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Metrics (Prometheus)", 1)[1].split("\n### ", 1)[0]
    table = re.findall(r"^\| `(statecrawl_[a-z_]+)` \| (gauge|counter) \|", section, re.M)
    assert sorted(name for name, _kind in table) == sorted(SPECS), "README table != SPECS"
    assert all(SPECS[name][0] == kind for name, kind in table)
    for setting in ("STATECRAWL_METRICS_MAX_CRAWLS", "STATECRAWL_METRICS_TOP_HOSTS",
                    "STATECRAWL_METRICS_OPEN"):
        assert f"| `{setting}` |" in readme
