"""Rule-based spiders work: every page of the demo site once, through Redis.

``CrawlSpider`` stores its followed links with the callbacks ``_callback`` and
``_errback``; statecrawl resolves those (and only those, and only on spiders
of that class) when it reads them back. A private method a spider defines
itself is still refused, when the request is yielded, before the dupefilter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.spiders import CrawlSpider

from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import SerializationError
from statecrawl.frontier.item_codec import load_item
from statecrawl.frontier.serialize import request_from_json, request_to_json
from tests.conftest import ROOT, RedisServer, worker_env
from tests.rule_spiders import RulesSpider

pytestmark = pytest.mark.slow


def crawl(spider: str, redis_url: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, "-s", "SPIDER_MODULES=tests.rule_spiders",
           *args]
    return subprocess.run(cmd, cwd=ROOT, env=worker_env(redis_url, out), capture_output=True,
                          text=True, timeout=180)


def pages(site: DemoSite) -> set[str]:
    return {u for u in site.expected_urls() if "/page/" in u} | {site.url + "/orphan.html"}


def items(server: RedisServer, crawl_id: str) -> dict[str, dict[str, Any]]:
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    return {k.decode(): load_item(v) for k, v in raw.items()}


def test_crawlspider_crawls_every_page_once(redis_server: RedisServer, site: DemoSite,
                                           crawl_id: str, tmp_path: Path) -> None:
    site.reset_hits()
    result = crawl("rules", redis_server.url, tmp_path, "-a", f"url={site.url}/",
                   "-a", f"crawl_id={crawl_id}", "-s", "ROBOTSTXT_OBEY=False")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not a public method" not in result.stderr
    got = items(redis_server, crawl_id)
    # /orphan.html is in no page's links: only the sitemap has it
    expected = {u for u in pages(site) if not u.endswith("/orphan.html")} | {site.url + "/missing.html"}
    assert set(got) == expected
    assert got[site.url + "/missing.html"]["error"]["type"] == "HttpError"  # the rule's errback
    assert all(got[u]["rule"] == 0 for u in expected if "/page/" in u)
    for url in expected:
        assert site.hits[url[len(site.url):]] == 1, url
    stats = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
    assert b"quarantined" not in stats and b"requests_unserializable" not in stats


def test_redis_crawl_spider_crawls_every_page_once(redis_server: RedisServer, crawl_id: str,
                                                  tmp_path: Path) -> None:
    with DemoSite(pages=40) as site:
        client = redis_server.client()
        key = f"{crawl_id}:start_urls"
        client.delete(key)
        client.lpush(key, json.dumps({"url": site.url + "/"}))
        result = crawl("redis_rules", redis_server.url, tmp_path, "-a", "domain=127.0.0.1",
                       "-s", f"STATECRAWL_CRAWL_ID={crawl_id}", "-s", "ROBOTSTXT_OBEY=False",
                       # scrapy-redis reads its Redis from this setting only (else localhost:6379)
                       "-s", f"REDIS_URL={redis_server.url}",
                       "-s", "MAX_IDLE_TIME_BEFORE_CLOSE=2",
                       "-s", f"REDIS_START_URLS_KEY={crawl_id}:start_urls")
        assert result.returncode == 0, result.stderr[-3000:]
        got = items(redis_server, crawl_id)
        expected = {u for u in pages(site) if not u.endswith("/orphan.html")}
        assert expected <= set(got), sorted(expected - set(got))[:5]
        for url in expected:
            assert site.hits[url[len(site.url):]] == 1, url


class OwnPrivate(Spider):
    name = "own_private"

    def _mine(self, response: Any) -> None:  # pragma: no cover - never called
        pass


def test_private_methods_are_refused_when_written_not_after() -> None:
    spider = OwnPrivate()
    with pytest.raises(SerializationError, match="private method"):
        request_to_json(Request("http://example.com/", callback=spider._mine), spider)


def test_scrapy_made_callbacks_resolve_only_on_their_spider_class() -> None:
    rules = RulesSpider(url="http://example.com/")
    request = next(iter(rules._build_request(0, _link("http://example.com/page/1.html")) for _ in [0]))
    body = request_to_json(request, rules)
    back = request_from_json(body, rules)
    assert back.callback == rules._callback and back.errback == rules._errback
    assert back.meta["rule"] == 0
    with pytest.raises(SerializationError, match="not a public method"):
        request_from_json(body, OwnPrivate())  # not a CrawlSpider: _callback is refused
    with pytest.raises(SerializationError, match="rule"):
        request_from_json(body.replace(b'"rule":0', b'"rule":7'), rules)
    assert isinstance(rules, CrawlSpider)


def _link(url: str) -> Any:
    from scrapy.link import Link

    return Link(url, text="t")
