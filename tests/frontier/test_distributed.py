"""Several workers, one crawl: every page fetched and exported exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from statecrawl import cli
from statecrawl.demo.site import DemoSite
from tests.conftest import RedisServer, scrapy_crawl, worker_env


def test_two_workers_share_a_1000_page_crawl(redis_server: RedisServer, big_site: DemoSite,
                                             crawl_id: str, tmp_path: Path) -> None:
    big_site.reset_hits()
    args = ["-a", f"url={big_site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0"]
    workers = [scrapy_crawl(args, worker_env(redis_server.url, tmp_path / f"w{i}"), wait=False)
               for i in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]  # type: ignore[union-attr]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-2000:] for log in logs)

    # both did real work, and each exited because the *crawl* finished
    per_worker = [sum(1 for _ in (tmp_path / f"w{i}").glob("pages-*.jsonl")) for i in range(2)]
    assert per_worker == [1, 1]
    fed = [[json.loads(x)["url"] for p in (tmp_path / f"w{i}").glob("pages-*.jsonl")
            for x in p.read_text().splitlines()] for i in range(2)]
    assert all(len(f) > 50 for f in fed), [len(f) for f in fed]
    assert all("Spider closed (finished)" in log for log in logs)

    # every page exactly once across workers, in Redis and on the wire
    urls = fed[0] + fed[1]
    assert len(urls) == len(set(urls)) and set(urls) == big_site.expected_urls()
    client = redis_server.client()
    stored = {k.decode() for k in client.hkeys(f"sc:{{{crawl_id}}}:items")}
    assert stored == big_site.expected_urls()
    for url in big_site.expected_urls():
        path = url.split(str(big_site.url.split("//")[1]), 1)[1]
        assert big_site.hits[path] == 1, (path, big_site.hits[path])
    assert client.hlen(f"sc:{{{crawl_id}}}:leases") == 0
    assert client.zcard(f"sc:{{{crawl_id}}}:queue") == 0

    # and `statecrawl export` writes each page exactly once
    export = tmp_path / "export"
    assert cli.main(["--redis-url", redis_server.url, "export", crawl_id, "--out", str(export)]) == 0
    exported = [json.loads(x)["url"] for x in (export / "pages.jsonl").read_text().splitlines()]
    assert exported == sorted(big_site.expected_urls())
    assert len(list((export / "markdown").rglob("*.md"))) == len(big_site.page_urls())


def test_late_worker_joins_and_both_exit(redis_server: RedisServer, crawl_id: str,
                                         tmp_path: Path) -> None:
    # 150 pages x 0.2 s / 4 at a time: ~7.5 s, so the crawl is still running when the second
    # worker joins (with 0.01 s a fast machine finished it first: "already finished")
    with DemoSite(pages=150, delay=0.2) as slow:
        args = ["-a", f"url={slow.url}/", "-a", f"crawl_id={crawl_id}", "-s", "CONCURRENT_REQUESTS=4"]
        first = scrapy_crawl(args, worker_env(redis_server.url, tmp_path / "a"), wait=False)
        time.sleep(2.0)
        second = scrapy_crawl(args, worker_env(redis_server.url, tmp_path / "b"), wait=False)
        out = [p.communicate(timeout=300)[0] for p in (first, second)]  # type: ignore[union-attr]
        assert [first.returncode, second.returncode] == [0, 0], out[1][-3000:]
        stored = {k.decode() for k in redis_server.client().hkeys(f"sc:{{{crawl_id}}}:items")}
        assert stored == slow.expected_urls()
        assert "joining crawl" in out[1]
