"""Render mode per request: over HTTP, in Chromium, or ``auto``.

:class:`RenderMiddleware` (a downloader middleware the add-on enables)
decides, for each request, whether scrapy-playwright renders it:

* ``meta["statecrawl_render"]``: ``"http"``, ``"browser"`` or ``"auto"``;
  a request without it gets ``STATECRAWL_RENDER`` (default ``"http"``). The
  ``site`` spider sets it from ``-a render=...``.
* ``browser``: the request gets ``meta["playwright"] = True`` and the page
  controls of ``meta["statecrawl_render_options"]`` (below) become
  scrapy-playwright page methods, here on the worker: page methods are
  objects, and only JSON goes to Redis.
* ``auto``: fetch over HTTP; if the page looks script-built
  (:func:`statecrawl.render.detect.looks_script_built`), render it again in the
  browser at once, on this worker and under the same lease. Each HTTP check
  is counted per host in Redis (``render_hosts``); once at least
  ``AUTO_MIN_CHECKS`` pages of a host were checked and at least half were
  script-built, the host *needs the browser*: every worker then renders its
  pages directly, skipping the HTTP fetch. A site with a few script-built
  pages keeps HTTP for the rest. Each ``STATECRAWL_RENDER_RECHECK``-th
  browser page of such a host is fetched over HTTP first, to notice a site
  that stopped needing the browser. Workers read the host list at most once
  a second.

Every rendered page waits after navigation until it has *settled* (no
request in flight, no short timer pending, no DOM change for a quiet
period), bounded: :mod:`statecrawl.render.settle`.

Page controls (``statecrawl_render_options``, all optional): ``settle_ms``
(the most a page waits to settle; 0: not at all; default
``STATECRAWL_RENDER_SETTLE_MS``), ``quiet_ms`` (the quiet period; default
``STATECRAWL_RENDER_QUIET_MS``), ``wait_for`` (a CSS selector, waited for
before settling), ``wait_ms`` (a fixed wait after settling), ``wait_until``
(``load``, ``domcontentloaded``, ``networkidle``, ``commit``: when navigation
counts as done, before all of the above), ``screenshot`` (true: a
full-page PNG is saved beside the page's Markdown file, under the rendering
worker's ``STATECRAWL_OUTPUT_DIR``; its path is in
``meta["statecrawl_screenshot"]``). Every response carries
``meta["statecrawl_renderer"]``: ``"http"`` or ``"browser"``. robots.txt and
sitemaps (``meta["statecrawl_aux"]``) always go over HTTP.

Bad pages end as a response or an error, never a stuck worker: navigation
has a timeout (``STATECRAWL_RENDER_TIMEOUT``), a rendered page larger than
``DOWNLOAD_MAXSIZE`` is refused, dialogs are dismissed by Playwright, a page
that starts a download yields the downloaded file, and a browser crash
fails the request (retried) while the worker goes on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.exceptions import NotConfigured
from scrapy.http import TextResponse
from scrapy_playwright.page import PageMethod

from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.output.files import markdown_relpath
from statecrawl.render.detect import looks_script_built
from statecrawl.render.settle import SETTLE_META_KEY, Settle, settle_page

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["PageTooLarge", "RENDER_MODES", "RENDERER_META_KEY", "RENDER_META_KEY", "RENDER_OPTIONS_META_KEY",
           "RenderMiddleware", "page_methods"]

logger = logging.getLogger(__name__)

RENDER_META_KEY = "statecrawl_render"
RENDER_OPTIONS_META_KEY = "statecrawl_render_options"
RENDERER_META_KEY = "statecrawl_renderer"
RENDER_MODES = ("http", "browser", "auto")
WAIT_UNTIL = ("load", "domcontentloaded", "networkidle", "commit")
#: Seconds a worker trusts its copy of the crawl's render_hosts.
HOSTS_TTL = 1.0
#: Pages of a host checked over HTTP before it can be found to need the browser.
AUTO_MIN_CHECKS = 3


class PageTooLarge(Exception):
    """A rendered page is over ``DOWNLOAD_MAXSIZE`` (Scrapy checks only HTTP downloads)."""


def page_methods(options: dict[str, Any], timeout_ms: float, screenshot: str | None = None,
                 settle: Settle | None = None) -> list[PageMethod]:
    """scrapy-playwright page methods for the page controls in *options*, in order."""
    methods = []
    if options.get("wait_for"):
        methods.append(PageMethod("wait_for_selector", str(options["wait_for"]),
                                  timeout=timeout_ms))
    if settle is not None:
        methods.append(settle.page_method())
    if options.get("wait_ms"):
        methods.append(PageMethod("wait_for_timeout", float(options["wait_ms"])))
    if options.get("screenshot") and screenshot:
        methods.append(PageMethod("screenshot", path=screenshot, full_page=True,
                                  timeout=timeout_ms))
    return methods


class RenderMiddleware:
    """Downloader middleware: HTTP, browser or auto per request (see the module docstring)."""

    def __init__(self, crawler: Crawler, *, default: str, recheck: int, timeout: float,
                 maxsize: int, output_dir: str | None = None, settle_ms: float = 5000,
                 quiet_ms: float = 40) -> None:
        if default not in RENDER_MODES:
            raise NotConfigured(f"STATECRAWL_RENDER must be one of {RENDER_MODES}, not {default!r}")
        self.crawler = crawler
        self.default = default
        self.recheck = max(0, recheck)
        self.timeout_ms = timeout * 1000
        self.maxsize = maxsize
        self.output_dir = Path(output_dir) if output_dir else None
        if settle_ms < 0 or quiet_ms < 0:
            raise NotConfigured(f"STATECRAWL_RENDER_SETTLE_MS ({settle_ms}) and "
                                f"STATECRAWL_RENDER_QUIET_MS ({quiet_ms}) must be >= 0")
        self.settle_ms = settle_ms
        self.quiet_ms = quiet_ms
        self.state = WorkerState.of(crawler)
        self._hosts: set[str] = set()  # hosts known to need the browser
        self._hosts_read = 0.0  # monotonic time of the last read from Redis

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RenderMiddleware:
        s = crawler.settings
        return cls(crawler, default=s.get("STATECRAWL_RENDER", "http"),
                   recheck=s.getint("STATECRAWL_RENDER_RECHECK", 50),
                   timeout=s.getfloat("STATECRAWL_RENDER_TIMEOUT", 30.0),
                   maxsize=s.getint("DOWNLOAD_MAXSIZE"),
                   output_dir=s.get("STATECRAWL_OUTPUT_DIR") or None,
                   settle_ms=s.getfloat("STATECRAWL_RENDER_SETTLE_MS", 5000),
                   quiet_ms=s.getfloat("STATECRAWL_RENDER_QUIET_MS", 40))

    # -- the host memory ----------------------------------------------------------

    async def _host_needs_browser(self, host: str) -> bool:
        now = time.monotonic()
        if now - self._hosts_read > HOSTS_TTL:
            self._hosts_read = now
            try:
                store = await self.state.open()
                raw = await store.client.hkeys(store.keys.render_hosts)
                self._hosts = {h.decode() for h in raw if b" " not in h}
            except RETRY_ERRORS as exc:  # keep the last copy; Redis is retried elsewhere
                logger.debug("statecrawl: cannot read render_hosts: %s", exc)
        return host in self._hosts

    async def _count_browser_page(self, host: str) -> int:
        """Count a browser page of a remembered host; returns the count (0 on error)."""
        try:
            store = await self.state.open()
            return int(await store.client.hincrby(store.keys.render_hosts, host, 1))
        except RETRY_ERRORS:
            return 0

    async def _record_check(self, host: str, script_built: bool) -> bool:
        """Count an HTTP check of a page of *host*; True if the host now needs the browser."""
        try:
            store = await self.state.open()
            key = store.keys.render_hosts
            async with store.client.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, f"{host} checked", 1)
                pipe.hincrby(key, f"{host} built", 1 if script_built else 0)
                checked, built = await pipe.execute()
            if checked >= AUTO_MIN_CHECKS and 2 * built >= checked:
                if await store.client.hsetnx(key, host, 0):
                    logger.info("statecrawl: %d of %d pages of %s were script-built; rendering "
                                "the rest of %s in the browser", built, checked, host, host)
                self._hosts.add(host)
                return True
        except RETRY_ERRORS as exc:
            logger.warning("statecrawl: cannot record render mode of %s: %s", host, exc)
        return False

    async def _forget(self, host: str) -> None:
        """*host* no longer looks script-built: back to HTTP, counts reset."""
        self._hosts.discard(host)
        try:
            store = await self.state.open()
            await store.client.hdel(store.keys.render_hosts, host, f"{host} checked",
                                    f"{host} built")
        except RETRY_ERRORS as exc:
            logger.warning("statecrawl: cannot record render mode of %s: %s", host, exc)

    # -- the middleware -------------------------------------------------------------

    def _to_browser(self, request: Request) -> None:
        meta = request.meta
        meta["playwright"] = True
        meta[RENDERER_META_KEY] = "browser"
        options = meta.get(RENDER_OPTIONS_META_KEY) or {}
        screenshot = None
        if options.get("screenshot") and self.output_dir is not None:
            target = self.output_dir / markdown_relpath(request.url).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            screenshot = meta["statecrawl_screenshot"] = str(target)
        settle = self._settle(options)
        if settle is not None:
            meta["playwright_page_init_callback"] = settle.init_callback(
                meta.get("playwright_page_init_callback"))
        meta["playwright_page_methods"] = page_methods(options, self.timeout_ms, screenshot, settle)
        goto = {"timeout": self.timeout_ms}
        if options.get("wait_until") in WAIT_UNTIL:
            goto["wait_until"] = options["wait_until"]
        meta["playwright_page_goto_kwargs"] = goto

    def _settle(self, options: dict[str, Any]) -> Settle | None:
        """This page's settle bounds (its options over the settings); None: do not settle."""
        def number(name: str, default: float) -> float:
            value = options.get(name)
            return float(value) if isinstance(value, (int, float)) and value >= 0 else default
        max_ms = min(number("settle_ms", self.settle_ms), self.timeout_ms)  # within the page's time
        return Settle(number("quiet_ms", self.quiet_ms), max_ms) if max_ms > 0 else None

    def _settled(self, request: Request) -> None:
        """Copy the settle page method's result into the meta and the stats."""
        meta = request.meta
        for method in meta.get("playwright_page_methods") or ():
            result = getattr(method, "result", None)
            if getattr(method, "method", None) is settle_page and isinstance(result, dict):
                meta[SETTLE_META_KEY] = result
                stats = self.crawler.stats
                stats.inc_value("statecrawl/render/settled" if result["settled"]
                                else "statecrawl/render/settle_max_reached")
                stats.inc_value("statecrawl/render/settle_ms", int(result["ms"]))
                if not result["settled"]:
                    logger.info("statecrawl: %s had not settled after %d ms; taken as it was",
                                request.url, result["ms"])
                return

    async def process_request(self, request: Request) -> None:
        meta = request.meta
        if meta.get("playwright"):  # decided already (by us, a retry, or the spider)
            if "playwright_page_methods" not in meta:
                self._to_browser(request)
            return
        mode = "http" if meta.get("statecrawl_aux") else meta.get(RENDER_META_KEY) or self.default
        if mode == "browser":
            self._to_browser(request)
            self.crawler.stats.inc_value("statecrawl/render/browser")
            return
        if mode == "auto":
            host = urlsplit(request.url).netloc
            if await self._host_needs_browser(host):
                count = await self._count_browser_page(host)
                if not (self.recheck and count and count % self.recheck == 0):
                    self._to_browser(request)
                    self.crawler.stats.inc_value("statecrawl/render/browser_host_known")
                    return
                meta["_statecrawl_recheck"] = True
        meta[RENDERER_META_KEY] = "http"

    async def process_response(self, request: Request, response: Response) -> Response:
        meta = request.meta
        if meta.get("playwright"):
            self._settled(request)
            if self.maxsize and len(response.body) > self.maxsize:
                raise PageTooLarge(f"rendered page of {len(response.body)} bytes is over "
                                   f"DOWNLOAD_MAXSIZE ({self.maxsize})")
            if "playwright_suggested_filename" in meta and b"Content-Type" not in response.headers:
                # a download: scrapy-playwright takes its headers from a response event that
                # can come after the file (seen in CI under load); with none, the type is
                # unknown, i.e. application/octet-stream (RFC 9110, 8.3)
                response.headers[b"Content-Type"] = b"application/octet-stream"
            return response
        mode = "http" if meta.get("statecrawl_aux") else meta.get(RENDER_META_KEY) or self.default
        if mode != "auto" or not isinstance(response, TextResponse) or response.status != 200:
            return response
        if "html" not in response.headers.get("Content-Type", b"text/html").decode("latin-1"):
            return response
        verdict = looks_script_built(response.text)
        host = urlsplit(request.url).netloc
        if meta.pop("_statecrawl_recheck", False):
            if not verdict.script_built:
                logger.info("statecrawl: %s no longer looks script-built (%s); back to HTTP",
                            host, verdict.reason)
                await self._forget(host)
        else:
            await self._record_check(host, verdict.script_built)
        if not verdict.script_built:
            return response
        logger.debug("statecrawl: %s looks script-built (%s); rendering it", request.url,
                     verdict.reason)
        self.crawler.stats.inc_value("statecrawl/render/auto_upgraded")
        rendered = request.replace(dont_filter=True)
        self._to_browser(rendered)
        assert self.crawler.engine is not None
        return await self.crawler.engine.download_async(rendered)
