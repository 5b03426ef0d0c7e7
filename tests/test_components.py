"""The add-on, and the scheduler and dupefilter used alone (without the add-on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scrapy.utils.misc import load_object
from scrapy.utils.test import get_crawler

from statecrawl.api.worker import JobDocuments
from statecrawl.demo.site import DemoSite
from statecrawl.output.pipelines import MarkdownFiles, RedisItemStore, ServiceReplies
from tests.conftest import RedisServer, worker_env

SPIDER = '''
import json, os
from scrapy import Request, Spider

class Links(Spider):
    name = "links"
    crawl_id = os.environ["CRAWL_ID"]

    async def start(self):
        yield Request(os.environ["START"], dont_filter=False)

    def parse(self, response):
        if response.url.endswith("/page/2.html"):
            raise ValueError("callback failure on purpose")
        if response.url.endswith("/page/3.html"):
            yield Request(response.urljoin("/page/4.html?x"), meta={"bad": object()})
        yield {"url": response.url}
        for href in response.css("main a::attr(href)").getall()[:3]:
            yield response.follow(href)
'''


def runspider(tmp_path: Path, server: RedisServer, site: DemoSite, crawl_id: str,
              *settings: str) -> subprocess.CompletedProcess[str]:
    spider = tmp_path / "links.py"
    spider.write_text(SPIDER)
    env = worker_env(server.url, None, CRAWL_ID=crawl_id, START=f"{site.url}/page/1.html")
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(spider), "-s", "LOG_LEVEL=INFO",
           *[x for s in settings for x in ("-s", s)]]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_addon_wires_everything_at_addon_priority() -> None:
    crawler = get_crawler(settings_dict={"ADDONS": {"statecrawl.Addon": 0}})
    s = crawler.settings
    assert s["SCHEDULER"] == "statecrawl.scheduler.Scheduler"
    assert s["DUPEFILTER_CLASS"] == "statecrawl.dupefilter.RedisDupeFilter"
    pipelines = {load_object(k): v for k, v in s.getdict("ITEM_PIPELINES").items()}
    assert pipelines == {JobDocuments: 650, ServiceReplies: 700, MarkdownFiles: 800,
                         RedisItemStore: 900}


def test_project_settings_win_over_the_addon() -> None:
    crawler = get_crawler(settings_dict={
        "ADDONS": {"statecrawl.Addon": 0},
        "DUPEFILTER_CLASS": "scrapy.dupefilters.RFPDupeFilter",
        "ITEM_PIPELINES": {"statecrawl.pipelines.RedisItemStore": 100},
    })
    assert crawler.settings["DUPEFILTER_CLASS"] == "scrapy.dupefilters.RFPDupeFilter"
    pipelines = {load_object(k): v for k, v in crawler.settings.getdict("ITEM_PIPELINES").items()}
    assert pipelines == {RedisItemStore: 100, JobDocuments: 650, ServiceReplies: 700,
                         MarkdownFiles: 800}


def test_scheduler_and_dupefilter_alone(redis_server: RedisServer, site: DemoSite,
                                        crawl_id: str, tmp_path: Path) -> None:
    result = runspider(tmp_path, redis_server, site, crawl_id,
                       "SCHEDULER=statecrawl.scheduler.Scheduler",
                       "DUPEFILTER_CLASS=statecrawl.dupefilter.RedisDupeFilter")
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Spider closed (finished)" in log
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    # the frontier ran through Redis and is drained, including the lease of the
    # request whose callback raised
    assert int(client.hget(k + "stats", "acked")) == int(client.hget(k + "stats", "enqueued")) > 5
    assert client.hlen(k + "leases") == 0 and client.hlen(k + "reqs") == 0
    assert "callback failure on purpose" in log
    # the unserializable request is an error with its reason, not a silent drop
    assert "cannot schedule <GET" in log and "meta.bad: object is not plain JSON data" in log
    assert "'statecrawl/request_unserializable': 1" in log
    assert int(client.hget(k + "stats", "seen")) > 5
    assert not client.exists(k + "items")  # no pipeline without the add-on


def test_redis_dupefilter_with_scrapys_own_scheduler_persists_across_runs(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    df = "DUPEFILTER_CLASS=statecrawl.dupefilter.RedisDupeFilter"
    first = runspider(tmp_path, redis_server, site, crawl_id, df)
    assert first.returncode == 0, first.stderr[-3000:]
    seen = int(redis_server.client().hget(f"sc:{{{crawl_id}}}:stats", "seen"))
    assert seen > 5
    site.reset_hits()
    second = runspider(tmp_path, redis_server, site, crawl_id, df)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"loaded {seen} fingerprints" in second.stderr
    assert sum(site.hits.values()) == 0  # everything was already seen


ROBOTS_SPIDER = '''
import os
from scrapy import Request, Spider

class Robots(Spider):
    name = "robots"
    crawl_id = os.environ["CRAWL_ID"]
    custom_settings = {"ADDONS": {"statecrawl.Addon": 0}, "ROBOTSTXT_OBEY": True,
                       "STATECRAWL_OUTPUT_DIR": ""}

    async def start(self):
        for path in ("/page/1.html", "/private/secret.html", "/page/2.html", "/private/secret.html?x"):
            yield Request(os.environ["BASE"] + path, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
'''


def test_requests_waiting_for_robots_txt_are_all_checked(redis_server: RedisServer, crawl_id: str,
                                                         tmp_path: Path) -> None:
    """Scrapy 2.19 lets through all but the first request that waited for robots.txt."""
    with DemoSite(pages=5) as fresh:  # robots.txt not yet fetched by anyone
        spider = tmp_path / "robots_spider.py"
        spider.write_text(ROBOTS_SPIDER)
        env = worker_env(redis_server.url, None, CRAWL_ID=crawl_id, BASE=fresh.url)
        env.pop("SCRAPY_SETTINGS_MODULE", None)
        result = subprocess.run([sys.executable, "-m", "scrapy", "runspider", str(spider)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert fresh.hits["/private/secret.html"] == 0 and fresh.hits["/private/secret.html?x"] == 0
        assert fresh.hits["/page/1.html"] == 1 and fresh.hits["/page/2.html"] == 1
        assert "'robotstxt/forbidden': 2" in result.stderr
