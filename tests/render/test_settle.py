"""Settled rendering: a rendered page waits until the content its scripts fetch is there.

The corpus is :class:`~statecrawl.demo.settle.SettleSite`: script-built pages
whose content arrives after ``load`` (timers up to 2 s, slow ``fetch()``,
hydration, a route change, infinite scroll, a shell around an empty
``<main>``) and a clock that never settles. Each crawl is a real ``scrapy
crawl site`` with Chromium against a real redis-server; a page counts as
captured when its marker sentence is in its item's Markdown (the marker is
also in the page's script data, so the raw HTML would not tell).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

from statecrawl.demo.settle import CORPUS, SettleSite
from statecrawl.frontier.item_codec import load_item
from statecrawl.render.detect import looks_script_built
from statecrawl.render.middleware import RenderMiddleware, page_methods
from statecrawl.render.settle import Settle, settle_page
from tests.conftest import RedisServer, scrapy_crawl, worker_env

pytestmark = pytest.mark.slow


def crawl(server: RedisServer, site: SettleSite, crawl_id: str, out: Path,
          *args: str) -> tuple[dict[str, dict[str, Any]], str, float]:
    """Crawl the corpus; (items by URL, the worker's log, seconds)."""
    started = time.monotonic()
    result = scrapy_crawl(["-a", f"url={site.url}/settle/", "-a", f"crawl_id={crawl_id}",
                           "-s", "RETRY_TIMES=0", "-s", "LOG_LEVEL=INFO", *args],
                          worker_env(server.url, out), timeout=240)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    return {k.decode(): load_item(v) for k, v in raw.items()}, result.stderr, seconds


def missed(site: SettleSite, items: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, url in site.corpus_urls().items()
            if site.marker(name) not in (items.get(url) or {}).get("markdown", "")]


def stat(log: str, name: str) -> int:
    found = re.search(rf"'statecrawl/render/{name}': (\d+)", log)
    return int(found.group(1)) if found else 0


def test_every_marker_is_captured_in_the_browser(redis_server: RedisServer, crawl_id: str,
                                                 tmp_path: Path) -> None:
    with SettleSite() as site:
        items, log, _ = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=browser",
                              "-a", "settle_ms=4000")
        assert missed(site, items) == []
        # the clock re-arms a timer forever: it ends at the bound, the others settle
        unsettled = re.findall(r"statecrawl: (\S+) had not settled after (\d+) ms", log)
        assert [url for url, _ in unsettled] == [site.corpus_urls()["clock"]], unsettled
        assert 4000 <= int(unsettled[0][1]) < 4500  # the bound, not the render timeout
        assert stat(log, "settle_max_reached") == 1, log[-3000:]
        assert stat(log, "settled") >= len(CORPUS) - 1 + 5  # the index and static pages too


def test_auto_mode_agrees_with_the_rendered_text(redis_server: RedisServer, crawl_id: str,
                                                 tmp_path: Path) -> None:
    """auto captures every marker: each page whose HTML lacks its content goes to the browser.

    Which page looks script-built is checked page by page in
    :func:`test_the_shell_page_is_script_built_and_hydration_is_not`.
    """
    with SettleSite() as site:
        items, _, _ = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=auto",
                            "-s", "CONCURRENT_REQUESTS=4")
        assert missed(site, items) == []
        # most pages are script-built, so the host is soon rendered directly
        assert {items[url]["renderer"] for url in site.corpus_urls().values()} >= {"browser"}


def test_settling_off_is_the_old_behaviour(redis_server: RedisServer, crawl_id: str,
                                           tmp_path: Path) -> None:
    """settle_ms=0 returns at load: the late content is lost (what settling fixes)."""
    with SettleSite() as site:
        items, log, _ = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=browser",
                              "-a", "settle_ms=0")
        assert len(missed(site, items)) >= len(CORPUS) // 2, missed(site, items)
        assert stat(log, "settled") == 0 and stat(log, "settle_max_reached") == 0


def test_the_shell_page_is_script_built_and_hydration_is_not() -> None:
    with SettleSite() as site:
        pass  # resources are rendered at start
    pages = {name: body.decode() for name, body in
             ((n, site._responses[f"/settle/{n}.html"][1]) for n in ("shell", "hydrate"))}
    assert looks_script_built(pages["shell"]).script_built
    assert not looks_script_built(pages["hydrate"]).script_built


def test_page_methods_wait_for_then_settle_then_wait_ms() -> None:
    settle = Settle(quiet_ms=40, max_ms=3000)
    methods = page_methods({"wait_for": "#x", "wait_ms": 100}, 5000, settle=settle)
    assert [m.method for m in methods] == ["wait_for_selector", settle_page, "wait_for_timeout"]
    assert methods[1].args == (40, 3000)


@pytest.mark.parametrize(("options", "expected"), [
    ({}, Settle(40, 5000)),
    ({"settle_ms": 800, "quiet_ms": 100}, Settle(100, 800)),
    ({"settle_ms": 0}, None),
    ({"settle_ms": "soon", "quiet_ms": -1}, Settle(40, 5000)),  # not a number: the default
    ({"settle_ms": 60_000}, Settle(40, 30_000)),  # never past STATECRAWL_RENDER_TIMEOUT
])
def test_per_request_options_over_settings(options: dict[str, Any],
                                           expected: Settle | None) -> None:
    crawler = get_crawler(settings_dict={"STATECRAWL_RENDER_SETTLE_MS": 5000})
    assert RenderMiddleware.from_crawler(crawler)._settle(options) == expected


def test_negative_settings_are_refused() -> None:
    crawler = get_crawler(settings_dict={"STATECRAWL_RENDER_QUIET_MS": -5})
    with pytest.raises(NotConfigured, match="STATECRAWL_RENDER_QUIET_MS"):
        RenderMiddleware.from_crawler(crawler)


async def _mark_page(page: Any, request: Any) -> None:
    """An init callback set before the render middleware's (an import path in the test)."""
    await page.add_init_script("window.__markedBefore = true;")


def test_an_init_callback_already_set_still_runs_after_the_settle_script() -> None:
    import asyncio

    from playwright.async_api import async_playwright
    from scrapy import Request
    from scrapy.settings import Settings

    from statecrawl.render.browser import launch_options

    async def main() -> tuple[bool, bool]:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(**launch_options(Settings()))
            try:
                page = await browser.new_page()
                callback = Settle(quiet_ms=40, max_ms=2000).init_callback(f"{__name__}._mark_page")
                await callback(page, Request("https://example.test/"))
                await page.goto("data:text/html,<p>hello</p>")
                return (await page.evaluate("window.__markedBefore === true"),
                        await page.evaluate("Object.prototype.hasOwnProperty.call(window, '__statecrawlSettle')"))
            finally:
                await browser.close()

    assert asyncio.run(asyncio.wait_for(main(), timeout=60)) == (True, True)
    settle = Settle(40, 2000)
    assert settle.init_callback(None) == settle.init_page  # nothing to chain: the method itself
