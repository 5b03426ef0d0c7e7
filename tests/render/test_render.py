"""Rendering with real Chromium: the three modes, the per-host memory, bad pages.

Each test runs ``scrapy crawl site`` processes against a real redis-server
and a :class:`~statecrawl.demo.apps.RenderSite`, whose script-built pages
have their text only after JavaScript ran (:data:`RENDERED_MARK`).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import Settings

from statecrawl.demo.apps import RENDERED_MARK, RenderSite
from statecrawl.frontier.item_codec import load_item
from statecrawl.render.browser import chromium_path
from statecrawl.render.detect import looks_script_built
from statecrawl.render.middleware import page_methods
from tests.conftest import RedisServer, scrapy_crawl, worker_env

pytestmark = pytest.mark.slow


def test_chromium_is_installed() -> None:
    """`make install` provides it; the other tests here need it (they are not skipped)."""
    assert chromium_path(Settings()) is not None


def crawl(server: RedisServer, site: RenderSite, crawl_id: str, out: Path, *args: str,
          timeout: float = 180) -> dict[str, dict[str, Any]]:
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-s", "RETRY_TIMES=0", *args], worker_env(server.url, out),
                          timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    return {k.decode(): load_item(v) for k, v in raw.items()}


# -- the verdict (no browser) ---------------------------------------------------------

@pytest.mark.parametrize(("html", "built"), [
    ("<html><body><div id='root'></div><script src='/app.js'></script></body></html>", True),
    ("<body><div id='__next'></div><script>1</script></body>", True),
    ("<body><noscript>Please enable JavaScript.</noscript><div class=x></div>"
     "<script src=a.js></script></body>", True),
    ("<body><p>Hi</p><script>" + "x" * 5000 + "</script></body>", True),
    ("<body><div id='root'><p>" + "server rendered " * 50 + "</p></div>"
     "<script src=a.js></script></body>", False),
    ("<body><p>A short page without any script.</p></body>", False),
    # a shell: plenty of chrome text around content still to come
    ("<body><nav>" + "Menu entry " * 80 + "</nav><main><p>Loading...</p></main>"
     "<script src=a.js></script></body>", True),
    ("<body><nav>" + "Menu entry " * 80 + "</nav><div aria-busy='true'></div>"
     "<script src=a.js></script></body>", True),
    ("<body>" + "<p>Article text.</p>" * 60 + "<div>Loading…</div><script src=a.js></script></body>",
     True),
    ("<body><main>" + "<p>Article text.</p>" * 60 + "</main><script src=a.js></script></body>",
     False),
    ("<body><nav>" + "Menu entry " * 80 + "</nav><main></main></body>", False),  # no script
    ("", False),
    ("\x00\x01 not html", False),
])
def test_script_built_verdict(html: str, built: bool) -> None:
    assert looks_script_built(html).script_built is built


def test_page_methods_from_options() -> None:
    methods = page_methods({"wait_for": "#done", "wait_ms": 250, "screenshot": True}, 5000,
                           screenshot="/tmp/x.png")
    assert [(m.method, m.args, m.kwargs) for m in methods] == [
        ("wait_for_selector", ("#done",), {"timeout": 5000}),
        ("wait_for_timeout", (250.0,), {}),
        ("screenshot", (), {"path": "/tmp/x.png", "full_page": True, "timeout": 5000}),
    ]
    assert page_methods({}, 5000) == []


# -- the three modes ------------------------------------------------------------------

def test_http_browser_and_auto_modes(redis_server: RedisServer, crawl_id: str,
                                     tmp_path: Path) -> None:
    with RenderSite(pages=30, script_every=10) as site:
        built = set(site.script_built_urls())
        assert len(built) == 3
        pages = set(site.page_urls())
        by_mode = {mode: crawl(redis_server, site, f"{crawl_id}-{mode}", tmp_path / mode,
                               "-a", f"render={mode}")
                   for mode in ("http", "browser", "auto")}
        # over HTTP, pages linked only from script-built pages may stay unknown
        only_via_scripts = {f"{site.url}/page/{c}.html"
                            for i in site.script_built_pages() for c in (2 * i + 1, 2 * i + 2)}
        for mode, items in by_mode.items():
            expected = pages - only_via_scripts if mode == "http" else pages
            assert expected <= set(items), (mode, sorted(expected - set(items)))
        http, browser, auto = by_mode["http"], by_mode["browser"], by_mode["auto"]
        # over HTTP a script-built page has no text; in the browser it has
        for url in built:
            assert RENDERED_MARK not in http[url]["markdown"] and http[url]["renderer"] == "http"
            assert RENDERED_MARK in browser[url]["markdown"], browser[url]
            assert RENDERED_MARK in auto[url]["markdown"], auto[url]
            assert auto[url]["renderer"] == "browser"
        for url in pages - built - only_via_scripts:
            assert browser[url]["renderer"] == "browser"
            assert auto[url]["renderer"] == "http", url  # 10% script-built: the host stays HTTP
            assert auto[url]["markdown"] == http[url]["markdown"]
        # links written by JavaScript are followed in the browser and auto modes
        child = f"{site.url}/page/21.html"
        assert child in browser and child in auto
        hosts = redis_server.client().hgetall(f"sc:{{{crawl_id}-auto}}:render_hosts")
        host = site.url.split("//", 1)[1]
        assert host.encode() not in hosts  # not a script-built host
        assert int(hosts[f"{host} built".encode()]) == 3


def test_script_built_host_is_rendered_directly(redis_server: RedisServer, crawl_id: str,
                                                tmp_path: Path) -> None:
    """Once most checked pages of a host were script-built, its pages skip the HTTP fetch."""
    with RenderSite(pages=60, script_every=1) as site:
        items = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=auto",
                      "-s", "CONCURRENT_REQUESTS=2")
        for url in site.script_built_urls():
            assert RENDERED_MARK in items[url]["markdown"], url
        host = site.url.split("//", 1)[1]
        hosts = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:render_hosts")
        assert host.encode() in hosts, hosts
        fetched_twice = [p for p, n in site.hits.items() if p.startswith("/page/") and n > 1]
        direct = int(hosts[host.encode()])
        assert direct >= 40 and len(fetched_twice) <= 20, (direct, len(fetched_twice))


def test_long_render_keeps_its_lease(redis_server: RedisServer, crawl_id: str,
                                     tmp_path: Path) -> None:
    with RenderSite(pages=3, script_every=1) as site:
        items = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=browser",
                      "-a", "wait_ms=2500", "-s", "STATECRAWL_WORKER_TIMEOUT=1",
                      "-s", "STATECRAWL_WATCHDOG=False")
        assert all(RENDERED_MARK in items[u]["markdown"] for u in site.script_built_urls())
        stats = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
        assert int(stats.get(b"reclaimed", 0)) == 0
        # pages 1 and 3 are also redirect targets, which Chromium follows itself
        assert site.hits["/page/2.html"] == 1, site.hits


def test_browser_restarts_every_n_pages(redis_server: RedisServer, crawl_id: str,
                                        tmp_path: Path) -> None:
    with RenderSite(pages=24, script_every=1) as site:
        result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                               "-a", "render=browser", "-s", "RETRY_TIMES=0",
                               "-s", "STATECRAWL_BROWSER_RESTART_PAGES=8"],
                              worker_env(redis_server.url, tmp_path), timeout=180)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        restarts = re.search(r"'statecrawl/browser_restarts': (\d+)", output)
        launched = re.search(r"'playwright/browser_count': (\d+)", output)
        assert restarts and int(restarts.group(1)) >= 2, output[-3000:]
        # a new browser for the pages after each restart (none after a last one at the end)
        assert launched and 2 <= int(restarts.group(1)) <= int(launched.group(1)) <= int(
            restarts.group(1)) + 1
        raw = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:items")
        items = {k.decode(): load_item(v) for k, v in raw.items()}
        assert all(RENDERED_MARK in items[u]["markdown"] for u in site.script_built_urls())


def test_screenshot_beside_the_markdown(redis_server: RedisServer, crawl_id: str,
                                        tmp_path: Path) -> None:
    with RenderSite(pages=2, script_every=1) as site:
        items = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=browser",
                      "-a", "screenshot=true", "-a", "wait_for=#root h1")
        page = items[f"{site.url}/page/1.html"]
        shot = Path(page["screenshot"])
        assert shot.is_relative_to(tmp_path.resolve()), shot
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.with_suffix(".md").exists()  # beside the page's Markdown file


# -- bad pages ------------------------------------------------------------------------

def test_bad_pages_each_end_as_an_item(redis_server: RedisServer, crawl_id: str,
                                       tmp_path: Path) -> None:
    with RenderSite(pages=2, script_every=0, link_bad=True, hang_seconds=20) as site:
        t0 = time.monotonic()
        items = crawl(redis_server, site, crawl_id, tmp_path, "-a", "render=browser",
                      "-a", "max_depth=1", "-s", "STATECRAWL_RENDER_TIMEOUT=3",
                      "-s", "DOWNLOAD_MAXSIZE=1000000")
        took = time.monotonic() - t0
        bad = {path: items.get(site.url + path) for path in
               ("/bad/hang.html", "/bad/dialogs.html", "/bad/away.html", "/bad/scroll.html",
                "/bad/download", "/bad/big.html")}
        assert all(bad.values()), [p for p, i in bad.items() if i is None]
        assert bad["/bad/hang.html"]["error"]["type"] == "TimeoutError", bad["/bad/hang.html"]
        assert "After the dialogs." in bad["/bad/dialogs.html"]["markdown"]
        assert bad["/bad/away.html"]["final_url"] == f"{site.url}/page/1.html"
        assert "Item 0" in bad["/bad/scroll.html"]["markdown"]
        download = bad["/bad/download"]
        assert download["error"] or download["content_type"] == "application/octet-stream"
        assert bad["/bad/big.html"]["error"]["type"] == "PageTooLarge"
        assert took < 90  # the hanging page cost its timeout, not the server's 20 s per try


def _chromium_pids(ancestor: int) -> list[int]:
    """Chromium processes descended from *ancestor*."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat.split("(", 1)[1].rsplit(")", 1)
            parents[int(entry.name)] = int(rest.split()[1])
            names[int(entry.name)] = name
    found = []
    for pid, name in names.items():
        p = pid
        while p in parents and p != ancestor and p > 1:
            p = parents[p]
        if p == ancestor and "chrom" in name.lower():
            found.append(pid)
    return found


def test_browser_crash_fails_the_request_not_the_worker(redis_server: RedisServer,
                                                        crawl_id: str, tmp_path: Path) -> None:
    with RenderSite(pages=30, script_every=1, delay=0.3) as site:
        # two pages at a time: when Chromium dies, more requests wait for a page than render
        proc = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                             "-a", "render=browser", "-s", "RETRY_TIMES=3",
                             "-s", "STATECRAWL_RENDER_MAX_PAGES=2",
                             "-s", "STATECRAWL_RENDER_TIMEOUT=10"],
                            worker_env(redis_server.url, tmp_path), wait=False)
        killed: list[int] = []

        def kill_browser() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                pids = _chromium_pids(proc.pid)
                if pids and site.hits.get("/page/3.html"):
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)
                        except ProcessLookupError:
                            pass
                time.sleep(0.05)

        killer = threading.Thread(target=kill_browser)
        killer.start()
        try:
            output, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:  # hung: fail the test, but leave no worker behind
                proc.kill()
                proc.wait()
            killer.join()
        assert killed, "Chromium was never seen running"
        assert proc.returncode == 0, output[-4000:]
        raw = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:items")
        items = {k.decode(): load_item(v) for k, v in raw.items()}
        assert set(site.page_urls()) <= set(items)
        rendered = [u for u in site.script_built_urls() if RENDERED_MARK in items[u]["markdown"]]
        assert len(rendered) >= 25, output[-3000:]  # retried in a new browser
        # those waiting for a page of the dead browser were woken, not failed by the hard timeout
        assert "statecrawl/render_timeouts" not in output, output[-3000:]
