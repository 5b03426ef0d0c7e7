"""A writable Redis gives an attacker a wrong crawl at most: scope and poison.

Requests read from Redis are checked against the worker's own scope, not the
flags they carry; requests that cannot be rebuilt are quarantined in the
crawl's dead-letter list and the crawl goes on. The integration test plants
crafted requests in a running crawl's frontier, with a local server standing
in for a cloud metadata endpoint: it must receive nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.scope import FetchScope, Scope
from statecrawl.sessions.passthrough import PassThroughMiddleware
from tests._servers import Reply, ScriptedServer
from tests.conftest import RedisServer, worker_env
from tests.frontier.test_chaos import Worker, check_every_page_once, wait_until


@pytest.mark.parametrize("url, allowed", [
    ("http://example.com/a", True),
    ("https://example.com/a", True),  # default ports: http and https are one site
    ("http://example.com:80/a", True),
    ("http://example.com:8080/a", False),  # another port is another site
    ("http://sub.example.com/a", False),
    ("http://example.com.evil.net/a", False),
    ("http://evil.net/?http://example.com/", False),
    ("file:///etc/passwd", False),
    ("ftp://example.com/a", False),
    ("http://169.254.169.254/latest/meta-data/", False),
    ("http://example.com:99999/", False),  # a bad port is not a crash
    ("http://[::1/", False),
])
def test_site_scope_is_host_and_port(url: str, allowed: bool) -> None:
    assert Scope("http://example.com/").host_allowed(url) is allowed
    assert FetchScope([Scope("http://example.com/").rule]).allows(url) is allowed


def test_a_start_url_with_a_port_admits_only_that_port() -> None:
    scope = Scope("http://127.0.0.1:8080/", allow_subdomains=True)
    assert scope.host_allowed("https://127.0.0.1:8080/x")
    assert not scope.host_allowed("http://127.0.0.1/x")
    assert not scope.host_allowed("http://127.0.0.1:8081/x")


def test_allowed_domains_admit_subdomains_and_pin_ports() -> None:
    scope = FetchScope.from_domains(["example.com", "api.other.org:8443"])
    assert scope.allows("http://www.example.com:1234/")
    assert scope.allows("https://api.other.org:8443/v1")
    assert not scope.allows("https://api.other.org/v1")
    assert not scope.allows("http://other.org:8443/")


class ScopedSpider(Spider):
    name = "scoped"
    allowed_domains = ["example.com"]
    statecrawl_headers = {"Authorization": "Bearer secret"}
    statecrawl_cookies = {"sid": "s3cret"}


class UnscopedSpider(ScopedSpider):
    name = "unscoped"
    allowed_domains: list[str] = []


@pytest.mark.parametrize("spider_cls, url, sent", [
    (ScopedSpider, "http://www.example.com/a", True),
    (ScopedSpider, "http://attacker.test/a", False),
    (ScopedSpider, "http://169.254.169.254/", False),
    (UnscopedSpider, "http://www.example.com/a", False),  # no scope: sent nowhere
])
def test_pass_through_goes_only_to_the_crawls_own_hosts(spider_cls: type[Spider], url: str,
                                                        sent: bool) -> None:
    crawler = get_crawler(spider_cls)
    crawler.spider = crawler._create_spider()
    middleware = PassThroughMiddleware.from_crawler(crawler)
    request = Request(url)
    middleware.process_request(request)
    assert (request.headers.get("Authorization") == b"Bearer secret") is sent
    assert (b"sid=s3cret" in (request.headers.get("Cookie") or b"")) is sent


# -- crafted requests in a running crawl -----------------------------------------------------

def _stored(url: str, **over: Any) -> str:
    doc: dict[str, Any] = {
        "v": 1, "url": url, "method": "GET", "cls": "Request", "callback": "parse",
        "errback": "on_error", "headers": {}, "priority": 1000, "dont_filter": True,
        "encoding": "utf-8", "flags": [], "meta": {"allow_offsite": True}, "cb_kwargs": {},
    }
    doc.update(over)
    return json.dumps(doc)


def _crafted(site: DemoSite, metadata: ScriptedServer) -> dict[str, str | bytes]:
    """Stored requests that must be quarantined (id -> raw JSON, or a packed value)."""
    alias = site.url.replace("127.0.0.1", "localhost")
    bad = {
        "metadata-port": _stored(metadata.url + "/latest/meta-data/"),
        "link-local": _stored("http://169.254.169.254/latest/meta-data/"),
        "file": _stored("file:///etc/passwd"),
        "other-host": _stored(alias + "/page/1.html"),
        "data-url": _stored("data:text/html,<p>x</p>"),
        "not-json": "{\"v\": 1, \"url\": ",
        "deep": "[" * 100_000 + "]" * 100_000,
        "huge-priority": _stored(site.url + "/page/2.html").replace('"priority": 1000',
                                                                   '"priority": 1e400'),
        "bad-encoding": _stored(site.url + "/page/2.html", encoding="no-such-codec"),
        "header-injection": _stored(site.url + "/page/2.html",
                                    headers={"X-A": ["1\r\nHost: evil"]}),
        "private-callback": _stored(site.url + "/page/2.html", callback="_follow"),
        "class": _stored(site.url + "/page/2.html", cls="os.system"),
        "depth-string": _stored(site.url + "/page/2.html", meta={"depth": "deep"}),
        "cookies-shape": _stored(site.url + "/page/2.html", cookies=[{"value": 1}]),
        # packed values (statecrawl.frontier.packing): a frame that is not zstd, and one that
        # needs a dictionary this crawl (under 500 requests) never made
        "packed-junk": b"\x02\x00not a zstd frame",
        "packed-no-dictionary": b"\x03\x00" + bytes(range(40)),
    }
    return {f"ffff{i:08x}": raw for i, raw in enumerate(bad.values())}


@pytest.mark.slow
def test_crafted_requests_are_quarantined_and_the_crawl_goes_on(
    redis_server: RedisServer, crawl_id: str, tmp_path: Path,
) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=200, delay=0.01) as site, \
            ScriptedServer({"*": [Reply(200, b'{"secret": "token"}')]}) as metadata:
        crafted = _crafted(site, metadata)
        # an in-scope page whose stored proxy points at the metadata server: fetched, directly
        proxied = _stored(site.url + "/page/7.html?via-proxy",
                          meta={"proxy": metadata.url, "allow_offsite": True})
        args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                "-a", 'headers={"Authorization": "Bearer pass-through"}']
        worker = Worker(args, worker_env(redis_server.url, tmp_path / "w"), tmp_path / "w.log")
        try:
            wait_until(lambda: client.hlen(k + "items") >= 5, 60, "the crawl runs")
            for request_id, raw in [*crafted.items(), ("ffffffffffff", proxied)]:
                client.hset(k + "reqs", request_id, raw)
                client.zadd(k + "queue", {request_id: -1000})
            assert worker.proc.wait(120) == 0, worker.log()
        finally:
            worker.stop()
        assert metadata.requests == [], "the metadata stand-in was reached"
        assert site.hits["/page/7.html?via-proxy"] == 1  # fetched directly, not via the proxy
    log = worker.text()
    assert log.count("quarantined stored request") == len(crafted), log[-3000:]
    dead = [json.loads(raw) for raw in client.lrange(k + "dead", 0, -1)]
    assert sorted(d["ref"] for d in dead) == sorted(crafted)
    assert all(d["kind"] == "request" and d["error"] for d in dead)
    by_ref = {d["ref"]: d["error"] for d in dead}
    assert "outside the crawl's scope" in by_ref["ffff00000000"]
    assert "http(s)" in by_ref["ffff00000002"]
    assert "does not decompress" in by_ref["ffff0000000e"]
    assert "a dictionary the crawl does not have" in by_ref["ffff0000000f"]
    # a packed value the dead letter cannot show as JSON is shown escaped, not as mojibake
    assert next(d["data"] for d in dead if d["ref"] == "ffff0000000e").startswith("b'\\x02")
    stats = client.hgetall(k + "stats")
    assert int(stats[b"quarantined"]) == int(stats[b"quarantined_request"]) == len(crafted)
    items = {key.decode() for key in client.hkeys(k + "items")}
    assert site.url + "/page/7.html?via-proxy" in items
    # nothing planted ended in the frontier or the leases; the real crawl is whole
    assert not any(client.hexists(k + "reqs", i) for i in crafted)
    client.hdel(k + "items", site.url + "/page/7.html?via-proxy")
    check_every_page_once(redis_server, crawl_id, site, tmp_path / "export")


def test_status_of_dead_letters_reads_them_back(redis_url: str, crawl_id: str) -> None:
    """The dead-letter reader survives its own poison (a cut UTF-8 sequence, junk)."""
    import redis.asyncio

    from statecrawl.frontier.deadletter import dead_letter, read_dead_letters
    from statecrawl.frontier.keys import CrawlKeys

    async def main() -> list[dict[str, Any]]:
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = CrawlKeys(crawl_id)
        await client.rpush(keys.dead, b"not json", dead_letter("cookie", "f", "bad", b"\xe2\x82", "w"))
        try:
            return await read_dead_letters(client, keys, 5)
        finally:
            await client.aclose()

    newest, oldest = asyncio.run(main())
    assert newest["kind"] == "cookie" and newest["ref"] == "f" and newest["data"] == "\ufffd"
    assert "unreadable" in oldest["error"]
