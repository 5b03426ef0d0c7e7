"""The live crawl page (``/crawls``, ``/crawls/{id}``) in a real headless Chromium.

A real ``statecrawl serve`` on the session's redis-server, the system Chromium
driven by Playwright's sync API, and a real ``scrapy crawl site`` worker against a
demo site slowed by a fleet-wide delay (so the crawl runs while the page watches it).
Playwright's sync API runs an event loop in this thread: Redis is written here with
the sync client, and asyncio helpers run in a thread of their own (:func:`off_loop`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Response, sync_playwright
from scrapy.settings import Settings

from statecrawl.api.live import CSP
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.rolling import BUCKET_SECONDS
from statecrawl.render.browser import CHROMIUM_ARGS, chromium_path
from tests.api._serve import Serve, http, job_status, make_job, serve
from tests.conftest import RedisServer, scrapy_crawl, worker_env

T = TypeVar("T")
KEY = "live-page-key"
HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


def off_loop(call: Callable[..., T], *args: Any) -> T:
    """*call* in a thread of its own (Playwright's loop runs in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call, *args).result(60)


def until(check: Callable[[], T], timeout: float = 20, what: str = "") -> T:
    """*check()*'s first truthy answer, polled every 0.1 s for at most *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


@dataclass
class Watched:
    """What went wrong in a page: console errors, uncaught errors, failed and >= 400 requests."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Watched:
        def console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.console.append(msg.text)

        def response(r: Response) -> None:
            if r.status >= 400:
                self.refused.append(f"{r.status} {r.url}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("requestfailed", lambda req: self.failed.append(f"{req.url} {req.failure}"))
        page.on("response", response)
        return self

    def assert_clean(self) -> None:
        assert (self.console, self.errors, self.failed, self.refused) == ([], [], [], [])


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = chromium_path(Settings())
    assert executable, "no system Chromium (make install provides it)"
    launched = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve(redis_server.url, tmp_path_factory.mktemp("live")) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve(redis_server.url, tmp_path_factory.mktemp("live-keyed"), "--api-key", KEY) as server:
        yield server


def make_crawl(redis_server: RedisServer, crawl_id: str, **meta: str) -> CrawlKeys:
    """A running crawl as its first worker would leave it (meta and the crawls SET)."""
    keys = CrawlKeys(crawl_id)
    with redis_server.client() as client:
        client.hset(keys.meta, mapping={"state": "running", "spider": "site", "epoch": "1",
                                        "created_at": str(time.time()), **meta})
        client.sadd(CRAWLS_KEY, crawl_id)
    return keys


def meta_state(redis_server: RedisServer, keys: CrawlKeys) -> str | None:
    with redis_server.client() as client:
        raw = client.hget(keys.meta, "state")
    return raw.decode() if raw else None


def polls(page: Page) -> int:
    return int(page.evaluate("document.body.dataset.polls || '0'"))


def number(page: Page, selector: str) -> int:
    return int((page.text_content(selector) or "0").replace(",", "").replace("–", "0") or 0)


def screenshot(page: Page, tmp_path: Path) -> Path:
    path = tmp_path / "live-page.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("STATECRAWL_SCREENSHOT_DIR"):
        out = Path(os.environ["STATECRAWL_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / path.name)
    return path


def test_the_shells_need_no_key_and_hold_no_crawl_data(keyed_api: Serve, redis_server: RedisServer,
                                                      crawl_id: str) -> None:
    make_crawl(redis_server, crawl_id)
    status, body, headers = http("GET", f"{keyed_api.url}/crawls/{crawl_id}")
    assert status == 200 and headers["Content-Security-Policy"] == CSP
    assert headers["Content-Type"].startswith("text/html") and crawl_id not in body
    assert "<script>" not in body and not re.search(r"\son\w+=", body)  # no inline code
    for path in ("/crawls", "/static/live/live-crawl.js", "/static/live/uPlot.iife.min.js",
                 "/static/live/uPlot.LICENSE"):
        assert http("GET", keyed_api.url + path)[0] == 200, path
    for path in ("/static/live/crawl.html", "/static/live/nope.js"):
        assert http("GET", keyed_api.url + path)[0] == 404, path
    assert http("GET", f"{keyed_api.url}/static/live/..%2Fapp.py")[0] == 401  # not a shell: keyed
    for method, path in (("GET", "/crawls.json"), ("GET", f"/crawls/{crawl_id}/data"),
                         ("POST", f"/crawls/{crawl_id}/cancel")):
        assert http(method, keyed_api.url + path)[0] == 401, path  # refused without the key
    assert meta_state(redis_server, CrawlKeys(crawl_id)) == "running"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert http("GET", f"{keyed_api.url}/crawls/nope-{crawl_id}/data", headers=auth)[0] == 404
    assert http("POST", f"{keyed_api.url}/crawls/bad%20id!/cancel", headers=auth)[0] == 404


def test_cancel_answers_the_truth_for_api_jobs_and_cli_crawls(api: Serve, redis_server: RedisServer,
                                                              crawl_id: str) -> None:
    job_id = off_loop(make_job, redis_server.url)  # an API crawl job (no worker yet)
    status, body, _ = http("POST", f"{api.url}/crawls/{job_id}/cancel")
    assert status == 200 and body["job"] is True and off_loop(job_status, redis_server.url, job_id) == "cancelled"
    status, body, _ = http("POST", f"{api.url}/crawls/{job_id}/cancel")
    assert status == 409 and body["status"] == "cancelled"
    assert http("DELETE", f"{api.url}/v2/crawl/{job_id}")[0] == 409  # the same job, the same answer
    keys = make_crawl(redis_server, crawl_id, state="finished")
    assert http("POST", f"{api.url}/crawls/{crawl_id}/cancel")[0] == 409
    assert meta_state(redis_server, keys) == "finished"


@pytest.mark.slow
def test_the_page_follows_a_running_crawl_and_cancels_it(
        api: Serve, redis_server: RedisServer, page: Page, crawl_id: str, tmp_path: Path) -> None:
    keys = CrawlKeys(crawl_id)
    watched = Watched()
    with DemoSite(pages=400) as site:
        worker = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-a", "limit=300",
                               "-s", "DOWNLOAD_DELAY=0.1", "-s", "RETRY_TIMES=0"],
                              worker_env(redis_server.url, tmp_path), wait=False)
        assert isinstance(worker, subprocess.Popen)
        try:
            with redis_server.client() as client:
                until(lambda: int(client.hget(keys.stats, "acked") or 0) >= 3, 60, "a first page done")
            watched.attach(page)
            page.goto(f"{api.url}/crawls")
            page.click(f"#crawls a:text-is('{crawl_id}')")
            page.wait_for_url(f"**/crawls/{crawl_id}")
            until(lambda: polls(page) >= 1, 15, "a first poll")
            first_done, first_pages = number(page, "#c-done"), int(page.get_attribute("#chart", "data-pages") or 0)
            assert page.get_attribute("#chart", "data-points") == "90"
            seen = polls(page)
            until(lambda: polls(page) >= seen + 2, 15, "two more polls")
            assert number(page, "#c-done") > first_done
            assert int(page.get_attribute("#chart", "data-pages") or 0) > first_pages
            assert page.locator("#chart canvas").count() >= 1  # uPlot drew
            assert page.text_content("#state") == "running" and not page.is_visible("#key-form")
            row = until(lambda: page.locator("#workers tbody tr").all_inner_texts(), 10, "workers")
            until(lambda: str(worker.pid) in " ".join(page.locator("#workers tbody tr").all_inner_texts()),
                  10, f"the worker's pid in {row}")
            assert "127.0.0.1" in page.text_content("#hosts tbody")  # the polite crawl's one host
            assert "polite crawl" in (page.text_content("#budget") or "")
            assert page.locator("#progress-row").is_visible()  # limit=300
            screenshot(page, tmp_path)
            page.click("#cancel")
            assert page.text_content("#cancel") == "Click again to cancel"
            page.click("#cancel")
            until(lambda: meta_state(redis_server, keys) == "cancelled", 10, "the crawl cancelled")
            until(lambda: "Cancelled" in (page.text_content("#message") or ""), 10, "the message")
            assert worker.wait(60) is not None
            until(lambda: page.evaluate("document.body.dataset.state") == "cancelled", 15, "state shown")
            assert page.is_disabled("#cancel")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert number(page, "#c-done") < 300  # cancelled before its limit
    status, body, _ = http("POST", f"{api.url}/crawls/{crawl_id}/cancel")
    assert status == 409 and body["error"] == "Crawl is already cancelled"
    watched.assert_clean()


def test_hostile_strings_from_redis_are_shown_as_text(api: Serve, redis_server: RedisServer,
                                                      page: Page, crawl_id: str) -> None:
    keys = make_crawl(redis_server, crawl_id, start_url=HOSTILE)
    with redis_server.client() as client:
        now_s, now_us = client.time()
        client.rpush(keys.dead, json.dumps({"kind": "request", "ref": HOSTILE, "error": HOSTILE,
                                            "at": now_s, "worker": HOSTILE, "data": ""}))
        bucket = keys.rolling(now_s // BUCKET_SECONDS)
        client.hset(bucket, mapping={f"h:{HOSTILE}:f": 3, f"h:{HOSTILE}:e": 1,
                                     f"err:{HOSTILE}": 1, "s:2xx": 2})
        client.expire(bucket, 600)
        client.zadd(keys.workers, {HOSTILE: now_s * 1000 + now_us // 1000 + 60_000})
        client.hset(keys.tokens, f"{HOSTILE}|info", json.dumps({"host": HOSTILE, "pid": 7}))
    watched = Watched().attach(page)
    page.goto(f"{api.url}/crawls/{crawl_id}")
    until(lambda: polls(page) >= 1, 15, "a first poll")
    for table in ("#dead", "#hosts", "#workers", "#error-classes"):
        assert HOSTILE in (page.text_content(f"{table} tbody") or ""), table
    assert HOSTILE in (page.text_content("#about") or "")
    assert page.locator("main img, table img, #about img").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
    page.goto(f"{api.url}/crawls")
    until(lambda: polls(page) >= 1, 15, "the list's first poll")
    assert page.locator("#crawls img").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None
    watched.assert_clean()
    with redis_server.client() as client:
        client.delete(keys.workers)  # no live worker left behind for the other tests


def test_with_api_keys_the_page_asks_for_the_key_and_cancel_needs_it(
        keyed_api: Serve, redis_server: RedisServer, page: Page, crawl_id: str) -> None:
    keys = make_crawl(redis_server, crawl_id)
    watched = Watched().attach(page)
    page.goto(f"{keyed_api.url}/crawls/{crawl_id}")
    page.wait_for_selector("#key-form", state="visible", timeout=10_000)
    assert polls(page) == 0 and page.is_disabled("#cancel")  # nothing shown without the key
    page.fill("#key-input", "wrong-key")
    page.click("#key-form button")
    until(lambda: "refused" in (page.text_content("#key-why") or "") and page.is_visible("#key-form"),
          10, "the wrong key refused")
    assert http("POST", f"{keyed_api.url}/crawls/{crawl_id}/cancel")[0] == 401
    assert meta_state(redis_server, keys) == "running"
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    until(lambda: polls(page) >= 1, 15, "a poll with the key")
    assert not page.is_visible("#key-form")
    assert page.evaluate("sessionStorage.getItem('statecrawl.apiKey')") == KEY
    until(lambda: not page.is_disabled("#cancel"), 10, "cancel enabled")
    page.click("#cancel")
    page.click("#cancel")
    until(lambda: meta_state(redis_server, keys) == "cancelled", 10, "cancelled with the key")
    assert watched.errors == [] and watched.failed == []
    assert all(r.startswith("401 ") for r in watched.refused) and len(watched.refused) == 2
    assert all("401" in text for text in watched.console), watched.console
