"""POST /v1|v2/map: the start page's links and the site's sitemaps, read by scrape workers.

Real processes: a private redis-server, one ``scrapy crawl scrape`` worker,
``statecrawl serve`` in front of it, and a local site (:mod:`tests.api._origin`)
with a page of links, a sitemap index, a urlset, a gzipped sitemap named in
robots.txt, and a sitemap that is missing. The SDK is firecrawl-py 4.54.0.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statecrawl.api.map import MAX_SITEMAPS, MapResult, MapService, in_scope, normalize
from statecrawl.api.models import MapRequest
from statecrawl.api.scrape import ScrapeFailed, ScrapeTimeout
from statecrawl.spiders.scrape import sitemap_links
from tests.api._origin import Origin
from tests.api._serve import Serve, http, serve
from tests.api.test_scrape_exec import start_worker, stop, wait_joined
from tests.conftest import RedisServer

HOME = """<!doctype html><html lang="en"><head><title>Map home</title>
<meta name="description" content="Where the map starts"></head><body><main>
<a href="/a">A</a> <a href="/b#part">B with a fragment</a> <a href="/b?x=1">B with a query</a>
<a href="/b">B</a> <a href="/c?q=2">C</a> <a href="http://example.com/external">out</a>
<a href="mailto:someone@example.com">mail</a> <a href="http://localhost:{port}/other-host">host</a>
</main></body></html>"""


def urlset(*urls: str) -> bytes:
    entries = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return (f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/'
            f'schemas/sitemap/0.9">{entries}</urlset>').encode()


def index(*urls: str) -> bytes:
    entries = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return (f'<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/'
            f'schemas/sitemap/0.9">{entries}</sitemapindex>').encode()


@pytest.fixture(scope="module")
def site() -> Iterator[Origin]:
    with Origin() as origin:
        base = origin.url
        port = base.rsplit(":", 1)[1]
        origin.files.update({
            "/map-home": (200, "text/html; charset=utf-8", HOME.format(port=port).encode()),
            "/sitemap.xml": (200, "application/xml", index(base + "/sitemap-pages.xml",
                                                           base + "/gone-sitemap.xml")),
            "/sitemap-pages.xml": (200, "text/xml", urlset(
                base + "/a", base + "/from-sitemap", base + "/deep/page#x",
                "http://other.example/elsewhere")),
            "/gone-sitemap.xml": (404, "text/html", b"<html><body>no</body></html>"),
            "/robots.txt": (200, "text/plain", b"User-agent: *\nSitemap: /robots-sitemap.xml.gz\n"),
            "/robots-sitemap.xml.gz": (200, "application/gzip",
                                       gzip.compress(urlset(base + "/from-robots"))),
        })
        yield origin


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """``statecrawl serve`` and one scrape worker on a crawl of this module."""
    crawl_id = "map-" + uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("map")
    log = tmp / "worker.log"
    worker = start_worker(redis_server.url, crawl_id, log)
    try:
        wait_joined(redis_server, crawl_id, worker, log)
        with serve(redis_server.url, tmp, env={"STATECRAWL_API_SCRAPE_CRAWL": crawl_id}) as server:
            yield server
    finally:
        stop(worker)


def post(api: Serve, version: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, answer, _ = http("POST", f"{api.url}/{version}/map", body, timeout=40)
    return status, answer


def urls(answer: dict[str, Any]) -> list[str]:
    return [x if isinstance(x, str) else x["url"] for x in answer["links"]]


# -- without workers --------------------------------------------------------------------------

def test_normalize_drops_fragments_and_maybe_queries() -> None:
    assert normalize("HTTP://Ex.COM/a?b=1#c", ignore_query=True) == "http://ex.com/a"
    assert normalize("https://ex.com/a?b=1#c", ignore_query=False) == "https://ex.com/a?b=1"
    assert normalize("https://ex.com", ignore_query=True) == "https://ex.com/"
    assert normalize("https://user:pw@ex.com:8080/x", ignore_query=True) == "https://ex.com:8080/x"
    for bad in ("mailto:a@b.c", "ftp://ex.com/f", "javascript:void(0)", "/relative", "http://[::1"):
        assert normalize(bad, ignore_query=True) is None, bad


def test_scope_is_the_host_and_maybe_its_subdomains() -> None:
    assert in_scope("https://www.ex.com/a", "ex.com", subdomains=False)
    assert in_scope("https://ex.com/a", "www.ex.com", subdomains=False)
    assert not in_scope("https://blog.ex.com/a", "ex.com", subdomains=False)
    assert in_scope("https://blog.ex.com/a", "ex.com", subdomains=True)
    assert not in_scope("https://notex.com/a", "ex.com", subdomains=True)
    assert not in_scope("https://ex.com.evil.org/a", "ex.com", subdomains=True)


def test_sitemap_links_reads_urlsets_indexes_gzip_and_robots() -> None:
    assert sitemap_links(urlset("https://e.com/1", "https://e.com/2"), "https://e.com/s.xml") == [
        {"url": "https://e.com/1", "text": ""}, {"url": "https://e.com/2", "text": ""}]
    assert sitemap_links(gzip.compress(index("https://e.com/s1.xml")), "https://e.com/s.xml.gz") == [
        {"url": "https://e.com/s1.xml", "text": "sitemap"}]
    robots = b"User-agent: *\nDisallow: /x\nSitemap: /s.xml\nsitemap: https://e.com/t.xml\n"
    assert sitemap_links(robots, "https://e.com/robots.txt") == [
        {"url": "https://e.com/s.xml", "text": "sitemap"}, {"url": "https://e.com/t.xml", "text": "sitemap"}]
    assert sitemap_links(b"<!doctype html><html><body>404</body></html>", "https://e.com/s.xml") == []
    assert sitemap_links(b"\x1f\x8bnot gzip", "https://e.com/s.xml.gz") == []
    assert sitemap_links(b'<?xml version="1.0"?><rss><channel/></rss>', "https://e.com/s.xml") == []


class FakeScrapes:
    """Stands in for ScrapeService.page: *pages* maps a URL to (delay s, page or exception)."""

    def __init__(self, pages: dict[str, tuple[float, Any]]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    async def page(self, url: str, options: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
        self.asked.append(url)
        delay, answer = self.pages.get(url, (0.0, {"url": url, "status": 404, "links": []}))
        if delay > timeout_ms / 1000:
            await asyncio.sleep(timeout_ms / 1000)
            raise ScrapeTimeout(f"Scrape timed out after {timeout_ms} ms")
        await asyncio.sleep(delay)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


def run_map(scrapes: FakeScrapes, body: dict[str, Any]) -> tuple[MapResult, float]:
    request = MapRequest.model_validate(body)
    started = time.monotonic()
    result = asyncio.run(MapService(scrapes).map(request))  # type: ignore[arg-type]
    return result, time.monotonic() - started


def home(*links: str) -> dict[str, Any]:
    return {"url": "https://e.com/", "status": 200, "title": "Home",
            "links": [{"url": u, "text": ""} for u in links]}


def test_a_slow_sitemap_is_a_warning_within_the_timeout() -> None:
    scrapes = FakeScrapes({"https://e.com/": (0.0, home("https://e.com/a")),
                           "https://e.com/sitemap.xml": (5.0, {})})
    result, took = run_map(scrapes, {"url": "https://e.com/", "timeout": 400})
    assert [x["url"] for x in result.links] == ["https://e.com/", "https://e.com/a"]
    assert result.warning == "sitemap https://e.com/sitemap.xml timed out"
    assert 0.3 < took < 1.5


def test_a_failed_start_page_is_the_answer_even_with_sitemap_urls() -> None:
    sitemap = {"url": "https://e.com/sitemap.xml", "status": 200,
               "links": [{"url": "https://e.com/s", "text": ""}]}
    scrapes = FakeScrapes({"https://e.com/": (0.0, ScrapeFailed("DNSLookupError: no")),
                           "https://e.com/sitemap.xml": (0.0, sitemap)})
    with pytest.raises(ScrapeFailed, match="DNSLookupError"):
        run_map(scrapes, {"url": "https://e.com/"})
    result, _ = run_map(scrapes, {"url": "https://e.com/", "sitemap": "only"})
    assert [x["url"] for x in result.links] == ["https://e.com/s"] and result.warning is None


def test_sitemap_only_with_every_read_timed_out_is_a_timeout() -> None:
    scrapes = FakeScrapes({"https://e.com/sitemap.xml": (5.0, {}), "https://e.com/robots.txt": (5.0, {})})
    with pytest.raises(ScrapeTimeout, match="Map timed out after 300 ms"):
        run_map(scrapes, {"url": "https://e.com/", "sitemap": "only", "timeout": 300})


def test_sitemap_indexes_are_followed_a_bounded_number_of_times() -> None:
    children = [f"https://e.com/s{i}.xml" for i in range(20)]
    pages: dict[str, tuple[float, Any]] = {"https://e.com/sitemap.xml": (0.0, {
        "url": "https://e.com/sitemap.xml", "status": 200,
        "links": [{"url": c, "text": "sitemap"} for c in children]})}
    for i, child in enumerate(children):
        pages[child] = (0.0, {"url": child, "status": 200,
                              "links": [{"url": f"https://e.com/p{i}", "text": ""}]})
    scrapes = FakeScrapes(pages)
    result, _ = run_map(scrapes, {"url": "https://e.com/", "sitemap": "only"})
    assert len(scrapes.asked) == MAX_SITEMAPS
    assert [x["url"] for x in result.links] == [f"https://e.com/p{i}" for i in range(MAX_SITEMAPS - 2)]


def test_subdomains_follow_include_subdomains() -> None:
    scrapes = FakeScrapes({"https://e.com/": (0.0, home(
        "https://blog.e.com/post", "https://www.e.com/w", "https://other.com/x", "ftp://e.com/f"))})
    result, _ = run_map(scrapes, {"url": "https://e.com/", "sitemap": "skip"})
    assert [x["url"] for x in result.links] == [
        "https://e.com/", "https://blog.e.com/post", "https://www.e.com/w"]
    assert result.links[0] == {"url": "https://e.com/", "title": "Home"}
    result, _ = run_map(scrapes, {"url": "https://e.com/", "sitemap": "skip",
                                  "includeSubdomains": False})
    assert [x["url"] for x in result.links] == ["https://e.com/", "https://www.e.com/w"]


def test_bad_bodies_are_400(redis_server: RedisServer, tmp_path: Path) -> None:
    with serve(redis_server.url, tmp_path) as server:
        for version in ("v1", "v2"):
            for body in ({}, {"url": "not a url"}, {"url": "https://e.com", "limit": 0},
                         {"url": "https://e.com", "limit": 30_001},
                         {"url": "https://e.com", "sitemap": "sometimes"},
                         {"url": "https://e.com", "timeout": -1}, ["https://e.com"]):
                status, answer, _ = http("POST", f"{server.url}/{version}/map", body)
                assert status == 400 and answer["code"] == "BAD_REQUEST", (version, body, answer)


@pytest.mark.slow
def test_no_worker_is_408_within_the_timeout(redis_server: RedisServer, site: Origin,
                                             tmp_path: Path) -> None:
    crawl_id = "map-none-" + uuid.uuid4().hex[:6]
    with serve(redis_server.url, tmp_path, env={"STATECRAWL_API_SCRAPE_CRAWL": crawl_id}) as server:
        for body in ({"url": site.url + "/map-home", "timeout": 1500},
                     {"url": site.url + "/map-home", "timeout": 1500, "sitemap": "only"},
                     {"url": site.url + "/map-home", "timeout": 1500, "sitemap": "skip"}):
            started = time.monotonic()
            status, answer, _ = http("POST", f"{server.url}/v2/map", body, timeout=20)
            assert time.monotonic() - started < 5, body
            assert status == 408 and answer["success"] is False, (body, answer)
            assert answer["code"] == "SCRAPE_TIMEOUT" and "timed out after 1500 ms" in answer["error"]


# -- through a worker -------------------------------------------------------------------------

@pytest.mark.slow
def test_v2_sdk_maps_page_and_sitemaps_merged_and_deduplicated(api: Serve, site: Origin) -> None:
    from firecrawl import Firecrawl

    base = site.url
    result = Firecrawl(api_url=api.url).map(base + "/map-home", timeout=20000)
    links = result.links
    assert links[0].url == base + "/map-home"
    assert links[0].title == "Map home" and links[0].description == "Where the map starts"
    assert all(x.title is None and x.description is None for x in links[1:])
    got = [x.url for x in links]
    assert len(got) == len(set(got))
    assert set(got) == {base + p for p in ("/map-home", "/a", "/b", "/c", "/from-sitemap",
                                           "/deep/page", "/from-robots")}
    assert got[1:4] == [base + "/a", base + "/b", base + "/c"]  # the page's links, then sitemaps
    status, answer = post(api, "v2", {"url": base + "/map-home", "timeout": 20000})
    assert status == 200 and answer["warning"] == f"sitemap {base}/gone-sitemap.xml answered 404"


@pytest.mark.slow
def test_queries_search_and_limit(api: Serve, site: Origin) -> None:
    base = site.url
    status, answer = post(api, "v2", {"url": base + "/map-home", "ignoreQueryParameters": False,
                                      "sitemap": "skip", "timeout": 20000})
    assert status == 200 and urls(answer) == [base + p for p in (
        "/map-home", "/a", "/b", "/b?x=1", "/c?q=2")]
    status, answer = post(api, "v2", {"url": base + "/map-home", "search": "FROM-", "timeout": 20000})
    assert status == 200 and sorted(urls(answer)) == [base + "/from-robots", base + "/from-sitemap"]
    status, answer = post(api, "v2", {"url": base + "/map-home", "search": "map home",
                                      "timeout": 20000})  # the start page's title matches
    assert status == 200 and urls(answer) == [base + "/map-home"]
    status, answer = post(api, "v2", {"url": base + "/map-home", "limit": 2, "timeout": 20000})
    assert status == 200 and urls(answer) == [base + "/map-home", base + "/a"]


@pytest.mark.slow
def test_sitemap_only_and_skip(api: Serve, site: Origin) -> None:
    base = site.url
    home = site.count("/map-home")
    status, answer = post(api, "v2", {"url": base + "/map-home", "sitemap": "only", "timeout": 20000})
    assert status == 200 and set(urls(answer)) == {base + p for p in (
        "/a", "/from-sitemap", "/deep/page", "/from-robots")}
    assert site.count("/map-home") == home  # no start page with sitemap "only"
    sitemaps = site.count("/sitemap.xml")
    status, answer = post(api, "v2", {"url": base + "/map-home", "sitemap": "skip", "timeout": 20000})
    assert status == 200 and urls(answer) == [base + p for p in ("/map-home", "/a", "/b", "/c")]
    assert "warning" not in answer and site.count("/sitemap.xml") == sitemaps


@pytest.mark.slow
def test_v1_answers_strings_and_reads_v1_options(api: Serve, site: Origin) -> None:
    from firecrawl import V1FirecrawlApp

    base = site.url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the v1 client uses pydantic's .dict()
        result = V1FirecrawlApp(api_url=api.url, api_key="fc-x").map_url(base + "/map-home",
                                                                         ignore_sitemap=True)
    assert result.success and result.links == [base + p for p in ("/map-home", "/a", "/b", "/c")]
    status, answer = post(api, "v1", {"url": base + "/map-home", "sitemapOnly": True,
                                      "search": "deep", "timeout": 20000})
    assert status == 200 and answer["links"] == [base + "/deep/page"]


@pytest.mark.slow
def test_a_start_page_that_cannot_be_fetched_is_500(api: Serve) -> None:
    status, answer = post(api, "v2", {"url": "http://127.0.0.1:9/", "timeout": 15000})
    assert status == 500 and answer["success"] is False and answer["code"] == "SCRAPE_FAILED"
    assert answer["error"].startswith("Map failed: ")
