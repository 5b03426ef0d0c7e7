"""Rolling counters: 10-second buckets written by the commits, read back as rates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from statecrawl import cli
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.rolling import BUCKET_SECONDS, latency_field, rates, window
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest
from tests.conftest import RedisServer, run_store, scrapy_crawl, worker_env


def _req(url: str) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0, url.encode())


def test_a_commit_counts_into_the_current_bucket(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[dict[bytes, bytes], dict[bytes, bytes], int, int]:
        await store.commit("w", dedupe="exact", requests=[_req("a"), _req("b"), _req("a")])
        _, pairs = await store.lease("w", 2, check_finished=False)
        now, _ = await store.client.time()
        await store.commit("w", dedupe="exact", acks=[lid for lid, _ in pairs],
                           items=[PendingItem("a", False, b'{"url":"a"}')],
                           counters={"ts:s:2xx": 2, "ts:bytes": 300, "retried": 1})
        after, _ = await store.client.time()
        buckets = {int(now) // BUCKET_SECONDS, int(after) // BUCKET_SECONDS}
        fields: dict[bytes, bytes] = {}
        for b in buckets:
            fields.update(await store.client.hgetall(store.keys.rolling(b)))
        ttl = min([await store.client.ttl(store.keys.rolling(b)) for b in buckets])
        return fields, await store.client.hgetall(store.keys.stats), ttl, len(buckets)

    fields, stats, ttl, spans = run_store(redis_url, crawl_id, body)
    if spans == 1:  # both commits in one bucket
        assert fields == {b"enqueued": b"2", b"duplicates": b"1", b"pages": b"2", b"items": b"1",
                          b"s:2xx": b"2", b"bytes": b"300"}
    assert fields[b"s:2xx"] == b"2" and fields[b"pages"] == b"2"
    assert 3500 < ttl <= 3600
    assert stats[b"retried"] == b"1" and not any(k.startswith(b"ts:") for k in stats)


def test_rates_divide_by_the_time_the_buckets_cover(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[dict[int, float], dict[str, int], int, int]:
        # returns the rates, the last minute's sums, and the seconds into the bucket
        # before and after the reads
        for _ in range(20):  # not across a bucket boundary
            now, _ = await store.client.time()
            last = int(now) // BUCKET_SECONDS
            for back, pages in ((0, 5), (1, 10), (5, 20), (6, 40), (89, 80), (90, 160)):
                await store.client.hset(store.keys.rolling(last - back), "pages", pages)
            got, counted = await rates(store.client, store.keys), await window(
                store.client, store.keys, 60)
            again, _ = await store.client.time()
            if int(again) // BUCKET_SECONDS == last:
                return got, counted, int(now) % BUCKET_SECONDS + 1, int(again) % BUCKET_SECONDS + 1
            await store.client.delete(*(store.keys.rolling(last - b) for b in range(91)))
        raise AssertionError("no quiet bucket in 20 tries")

    got, counted, first, last = run_store(redis_url, crawl_id, body)
    assert counted == {"pages": 35}  # buckets 0-5 back: the last minute
    for seconds, pages, whole in ((60, 35, 50), (300, 75, 290), (900, 155, 890)):
        # 900: 90 buckets, 0-89 back; divided by the whole buckets + the current one so far
        assert pages / (whole + last) - 1e-9 <= got[seconds] <= pages / (whole + first) + 1e-9


def test_latency_buckets_follow_prometheus_bounds() -> None:
    assert [latency_field(s) for s in (0.0, 0.05, 0.051, 3.0, 10.0, 11.0)] == [
        "lat:0.05", "lat:0.05", "lat:0.1", "lat:5", "lat:10", "lat:+Inf"]


def test_a_crawl_counts_every_fetch_and_page(redis_server: RedisServer, site: DemoSite,
                                             crawl_id: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    site.reset_hits()
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-s", "RETRY_TIMES=0"], worker_env(redis_server.url, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]  # type: ignore[union-attr]
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    fields: dict[str, int] = {}
    for key in client.scan_iter(match=k.replace("{", "\\{").replace("}", "\\}") + "ts:*"):
        for name, value in client.hgetall(key).items():
            fields[name.decode()] = fields.get(name.decode(), 0) + int(value)
    fetched = sum(site.hits.values())  # every request the site saw, robots.txt included
    statuses = sum(v for n, v in fields.items() if n.startswith("s:"))
    host = site.url.split("//")[1].split(":")[0]
    failed = sum(v for n, v in fields.items() if n.startswith("err:"))  # e.g. a robots.txt
    assert statuses + failed == fetched == fields[f"h:{host}:f"], json.dumps([fields, site.hits])
    assert fields["ignored"] >= 1  # /private/secret.html: robots.txt forbids it
    assert fields["s:4xx"] >= 1 and fields["s:5xx"] >= 1 and fields["s:3xx"] >= 1
    assert fields[f"h:{host}:e"] == fields["s:5xx"] + failed  # the demo's /error.html
    assert sum(v for n, v in fields.items() if n.startswith("lat:")) == statuses
    stats = client.hgetall(k + "stats")
    assert fields["pages"] == int(stats[b"acked"]) and fields["items"] >= len(site.expected_urls())
    assert fields["bytes"] > 0
    capsys.readouterr()
    assert cli.main(["--redis-url", redis_server.url, "status", crawl_id, "--json"]) == 0
    status: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert status["pages_per_s"]["1m"] > 0 and set(status["pages_per_s"]) == {"1m", "5m", "15m"}
