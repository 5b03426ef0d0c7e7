"""Response bodies go through firecrawl-py 4.54.0's own parsers."""

from __future__ import annotations

import asyncio
import warnings
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from firecrawl.v1.client import V1CrawlStatusResponse, V1FirecrawlApp, V1FirecrawlDocument, V1MapResponse
from firecrawl.v2.methods.crawl import get_active_crawls, get_crawl_errors, get_crawl_status
from firecrawl.v2.methods.map import map as sdk_map
from firecrawl.v2.types import Document
from firecrawl.v2.utils.normalize import normalize_document_input
from redis.asyncio import Redis

from statecrawl.api import (
    JobStore, active_body, document_from_page, errors_body, map_body, parse_request, start_body,
    status_body, status_url,
)
from statecrawl.api.responses import NOT_FOUND, iso
from tests.api._sdk import FakeClient, FakeResponse

BASE = "http://api.test"
PAGE_ITEM = {
    "url": "https://e.com/a", "final_url": "https://e.com/a/", "crawl_id": "c", "fetched_at": "now",
    "status": 200, "content_type": "text/html", "title": "A", "description": "About A", "language": "en",
    "markdown": "# A", "html": "<h1>A</h1>", "raw_html": "<html><h1>A</h1></html>",
    "links": [{"url": "https://e.com/b", "text": "B"}, {"url": "https://e.com/c", "text": "C"}],
}


def status_answer(redis_url: str, version: str = "v2"):  # type: ignore[no-untyped-def]
    """What the API will answer to GET <version>/crawl/<id>[?skip&limit]: the store plus the builders."""
    def answer(method: str, url: str) -> tuple[int, Any]:
        parts = urlsplit(url)
        job_id = parts.path.rstrip("/").rsplit("/", 1)[1]
        query = {k: int(v[0]) for k, v in parse_qs(parts.query).items()}

        async def read() -> tuple[int, Any]:
            client = Redis.from_url(redis_url)
            try:
                page = await JobStore(client).page(job_id, query.get("skip", 0), query.get("limit"))
            finally:
                await client.aclose()
            if page is None:
                return 404, NOT_FOUND
            nxt = None if page.next_skip is None else status_url(
                BASE, version, "crawl", job_id, page.next_skip, query.get("limit"))
            return 200, status_body(page, nxt)
        return asyncio.run(read())
    return answer


def make_job(redis_url: str, n: int, finish: bool) -> str:
    async def main() -> str:
        client = Redis.from_url(redis_url)
        try:
            store = JobStore(client)
            job, _ = await store.create("crawl", parse_request("v2", "crawl", {"url": "https://e.com"}))
            docs = [document_from_page({**PAGE_ITEM, "markdown": f"page {i}"}, ["markdown", "links"],
                                       scrape_id=f"s{i}") for i in range(n)]
            await store.add(job.id, docs, discovered=n + 5)
            if finish:
                await store.finish(job.id, "completed")
            return job.id
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_the_sdk_pages_through_a_finished_crawl(redis_url: str) -> None:
    job_id = make_job(redis_url, 250, finish=True)
    fake = FakeClient(status_answer(redis_url))
    job = get_crawl_status(fake, job_id)  # type: ignore[arg-type]
    assert job.status == "completed" and len(job.data) == 250 and len(fake.calls) == 3
    assert [d.markdown for d in job.data] == [f"page {i}" for i in range(250)]
    assert (job.completed, job.total, job.credits_used) == (250, 255, 250)
    assert job.expires_at is not None and job.expires_at > datetime.now(timezone.utc)
    assert fake.calls[1][1] == f"{BASE}/v2/crawl/{job_id}?skip=100"


def test_the_sdk_stops_on_a_running_crawls_empty_page(redis_url: str) -> None:
    job_id = make_job(redis_url, 150, finish=False)
    fake = FakeClient(status_answer(redis_url), max_calls=5)
    job = get_crawl_status(fake, job_id)  # type: ignore[arg-type]
    assert job.status == "scraping" and len(job.data) == 150
    # 100 docs, 50 docs, then an empty page whose next is its own URL: the SDK stops there
    assert [u for _, u in fake.calls][1:] == [f"{BASE}/v2/crawl/{job_id}?skip=100",
                                               f"{BASE}/v2/crawl/{job_id}?skip=150"]
    answer = status_answer(redis_url)("GET", fake.calls[-1][1])[1]
    assert answer["data"] == [] and answer["next"] == fake.calls[-1][1]


def test_the_v1_sdk_reads_a_status_page(redis_url: str) -> None:
    job_id = make_job(redis_url, 120, finish=True)
    app = V1FirecrawlApp(api_key="fc-test", api_url=BASE)
    answer = status_answer(redis_url, "v1")
    app._get_request = (  # type: ignore[method-assign]
        lambda url, headers, *a, **k: FakeResponse(*answer("GET", url)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        status = app.check_crawl_status(job_id)
    assert isinstance(status, V1CrawlStatusResponse) and status.success and status.status == "completed"
    assert len(status.data) == 120 and status.next is None
    last = answer("GET", f"{BASE}/v1/crawl/{job_id}?skip=100")[1]
    assert "next" not in last  # the v1 SDK tests for the key, not its value


def test_documents_parse_in_both_sdks() -> None:
    body = document_from_page(PAGE_ITEM, ["markdown", "html", "rawHtml", "links"], scrape_id="s1",
                              unsupported=["json"], proxy="auto", cache="stale")
    doc = Document(**normalize_document_input(body))
    md = doc.metadata_typed
    assert (md.source_url, md.url, md.status_code, md.title, md.language) == (
        "https://e.com/a", "https://e.com/a/", 200, "A", "en")
    assert (md.proxy_used, md.cache_state, md.scrape_id, md.content_type) == (
        "basic", None, "s1", "text/html")
    assert doc.links == ["https://e.com/b", "https://e.com/c"] and doc.raw_html and doc.html
    assert doc.warning and "json" in doc.warning
    assert V1FirecrawlDocument(**body).rawHtml == PAGE_ITEM["raw_html"]
    only = document_from_page({**PAGE_ITEM, "error": {"type": "HttpError", "message": "404"}, "status": 404},
                              ["markdown"], proxy="stealth", cache="hit")
    assert set(only) == {"markdown", "metadata"}
    assert (only["metadata"]["statusCode"], only["metadata"]["error"]) == (404, "404")
    assert (only["metadata"]["proxyUsed"], only["metadata"]["cacheState"]) == ("stealth", "hit")


def test_errors_active_map_and_start_bodies() -> None:
    errors = errors_body([{"id": "s1", "url": "https://e.com/x", "error": "timeout", "code": None,
                           "timestamp": "2026-01-01T00:00:00.000Z", "extra": 1}], ["https://e.com/admin"])
    parsed = get_crawl_errors(FakeClient(lambda m, u: (200, errors)), "id")  # type: ignore[arg-type]
    assert parsed.errors[0].error == "timeout" and parsed.robots_blocked == ["https://e.com/admin"]
    assert "code" not in errors["errors"][0] and "extra" not in errors["errors"][0]

    class J:  # the fields active_body reads
        id, url, created_at = "j1", "https://e.com", datetime(2026, 1, 2, 3, 4, 5, 678000, timezone.utc)
    active = active_body([J()], {"j1": {"limit": 5}})  # type: ignore[list-item]
    crawls = get_active_crawls(FakeClient(lambda m, u: (200, active))).crawls  # type: ignore[arg-type]
    assert (crawls[0].id, crawls[0].url, crawls[0].options) == ("j1", "https://e.com", {"limit": 5})
    assert active["crawls"][0]["created_at"] == "2026-01-02T03:04:05.678Z"

    links = [{"url": "https://e.com/", "title": "Home"}, "https://e.com/b"]
    fake = FakeClient(lambda m, u: (200, map_body(links, "v2")))
    mapped = sdk_map(fake, "https://e.com")  # type: ignore[arg-type]
    assert [(x.url, x.title) for x in mapped.links] == [("https://e.com/", "Home"), ("https://e.com/b", None)]
    assert V1MapResponse(**map_body(links, "v1")).links == ["https://e.com/", "https://e.com/b"]

    url = status_url("https://api.example:8443/", "v2", "batch", "j1")
    assert url == "https://api.example:8443/v2/batch/scrape/j1"
    assert start_body("j1", url) == {"success": True, "id": "j1", "url": url}
    assert start_body("j1", url, ["ftp://x"])["invalidURLs"] == ["ftp://x"]
    assert iso(datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)) == "2026-05-06T07:08:09.000Z"
