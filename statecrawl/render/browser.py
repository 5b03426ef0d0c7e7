"""Chromium through scrapy-playwright: which browser, how it is launched, when it restarts.

The add-on installs :class:`BrowserHandler` as Scrapy's http/https download
handler. It *is* scrapy-playwright's handler (requests without
``meta["playwright"]`` go over plain HTTP, exactly as before); it adds two
things. It starts Playwright (a Node.js driver process) at the first page to
render, not when the engine starts, so a crawl that never renders never
pays for it. And it adds a restart policy: after ``STATECRAWL_BROWSER_RESTART_PAGES`` pages it lets
the pages open in the browser finish, holds new ones back for that moment,
closes the browser, and the next page launches a fresh one (scrapy-playwright
relaunches a disconnected browser). A browser that crashes is relaunched the
same way; the requests it was rendering fail with an error and are retried
by Scrapy's RetryMiddleware, those waiting for a page get one in the new
browser -- the worker goes on.

Which Chromium (:func:`chromium_path`): ``STATECRAWL_CHROMIUM_PATH``, else the
system's (``chromium`` from Debian, ``chromium-browser``, ``google-chrome``),
else Playwright's own download. ``playwright install`` needs the internet;
``make install`` installs Debian's ``chromium`` instead.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import shutil
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.exceptions import DownloadTimeoutError
from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

from statecrawl.frontier.politeness import politeness_of

if TYPE_CHECKING:
    from playwright.async_api import Page
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

__all__ = ["BLOCKED_RESOURCES", "BrowserHandler", "ResourceBlocker", "block_heavy_resources",
           "chromium_path", "launch_options"]

logger = logging.getLogger(__name__)

#: Flags for Chromium as root in a container without a display: no sandbox
#: (it needs user namespaces a container rarely has), /tmp instead of a
#: small /dev/shm, no GPU.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--mute-audio")

#: Playwright resource types not fetched by default (``STATECRAWL_RENDER_BLOCK``).
BLOCKED_RESOURCES = ("image", "font", "media")

_SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path(settings: BaseSettings) -> str | None:
    """The Chromium executable to launch, or None for Playwright's own browser."""
    configured = settings.get("STATECRAWL_CHROMIUM_PATH")
    if configured:
        return str(configured)
    for name in _SYSTEM_CHROMIUMS:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_options(settings: BaseSettings) -> dict[str, Any]:
    """``PLAYWRIGHT_LAUNCH_OPTIONS`` for headless Chromium that works as root, no display."""
    options: dict[str, Any] = {"headless": True, "args": list(CHROMIUM_ARGS)}
    path = chromium_path(settings)
    if path:
        options["executable_path"] = path
    return options


def block_heavy_resources(request: PlaywrightRequest) -> bool:
    """``PLAYWRIGHT_ABORT_REQUEST`` as the add-on sets it (a name settings can hold).

    :class:`BrowserHandler` replaces it with a :class:`ResourceBlocker` for
    the types in ``STATECRAWL_RENDER_BLOCK``; this default is the same rule.
    """
    return ResourceBlocker(list(BLOCKED_RESOURCES))(request)


def _is_internal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: not resolved here
    return not address.is_global


class ResourceBlocker:
    """``PLAYWRIGHT_ABORT_REQUEST``: what a rendered page may not fetch.

    * resources of the blocked types (``STATECRAWL_RENDER_BLOCK``);
    * a redirect of the page itself to another host: over HTTP the ``site``
      spider names such a redirect in an item and does not follow an
      off-site one, and Chromium must not follow it either;
    * anything on a loopback, private or link-local address (or
      ``localhost``) unless the page itself is on that host: a page must not
      make the crawler reach into its own network.
    """

    def __init__(self, types: list[str]) -> None:
        self.types = frozenset(types)

    def __call__(self, request: PlaywrightRequest) -> bool:
        if request.resource_type in self.types:
            return True
        host = urlsplit(request.url).hostname or ""
        first = request
        while first.redirected_from is not None:
            first = first.redirected_from
        if request.is_navigation_request() and first is not request:
            return host != urlsplit(first.url).hostname
        if not _is_internal(host):
            return False
        try:
            page_url = request.frame.page.url if not request.is_navigation_request() else first.url
        except Exception:  # noqa: BLE001 - a detached frame: refuse
            return True
        return host != urlsplit(page_url).hostname


class BrowserHandler(ScrapyPlaywrightDownloadHandler):
    """scrapy-playwright's handler with a browser restart every N pages (see module docstring)."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        if self.abort_request is block_heavy_resources:
            self.abort_request = ResourceBlocker(
                crawler.settings.getlist("STATECRAWL_RENDER_BLOCK", list(BLOCKED_RESOURCES)))
        self.restart_pages = crawler.settings.getint("STATECRAWL_BROWSER_RESTART_PAGES", 500)
        # A page gets its navigation timeout and as long again for its page
        # methods, counted from when its page exists (not while it waits for
        # one of the context's pages); past that it fails (and is retried).
        # Without this bound a page being created as the browser crashed
        # waited forever.
        self.hard_timeout = 2 * crawler.settings.getfloat("STATECRAWL_RENDER_TIMEOUT", 30.0) + 5
        self._created: dict[int, asyncio.Event] = {}  # id(request) -> set once its page exists
        self._rendered = 0  # pages since the browser was launched
        self._finished = 0  # pages done (or failed) since the worker started
        self._open = 0  # pages rendering now
        self._gate = asyncio.Event()  # set: new pages may start
        self._gate.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._launched = False
        self._launching = asyncio.Lock()
        self._contexts: list[Any] = []  # scrapy-playwright's context wrappers, until forgotten

    if inspect.iscoroutinefunction(ScrapyPlaywrightDownloadHandler.download_request):
        # A polite crawl's request waits for its slot here, after every middleware,
        # so nothing but the connection stands between its slot and the wire
        # (statecrawl.frontier.politeness).
        async def download_request(self, request: Request) -> Response:
            polite = politeness_of(self._crawler)
            if polite is not None:
                polite.handler_holds = True
                await polite.hold(request)
            return await super().download_request(request)

    async def _maybe_launch_in_thread(self) -> None:
        """At engine start: nothing yet (see :meth:`_download_request`)."""

    async def _close(self) -> None:
        if self._launched:
            await super()._close()

    async def _download_request(self, request: Request, spider: Spider | None = None) -> Response:
        if not self._launched:
            async with self._launching:
                if not self._launched:
                    await self._launch()
                    self._launched = True
        await self._gate.wait()
        self._open += 1
        self._idle.clear()
        try:
            return await self._bounded(request, spider)
        finally:
            self._open -= 1
            self._finished += 1
            self._rendered += 1
            if self._open == 0:
                self._idle.set()
            if self.restart_pages and self._rendered >= self.restart_pages and self._gate.is_set():
                self._gate.clear()
                asyncio.ensure_future(self._restart())

    async def _create_page(self, request: Request, spider: Spider) -> Page:
        page = await super()._create_page(request, spider)
        created = self._created.get(id(request))
        if created is not None:
            created.set()
        return page

    async def _bounded(self, request: Request, spider: Spider | None) -> Response:
        """scrapy-playwright's download, failed ``hard_timeout`` s after its page was created.

        Before that, while it waits for one of the context's pages
        (``STATECRAWL_RENDER_MAX_PAGES``), it fails only if no other page
        finished for ``hard_timeout`` s either (a browser that hangs while a
        page is being created).
        """
        created = self._created[id(request)] = asyncio.Event()
        task = asyncio.ensure_future(super()._download_request(request, spider))
        waiter = asyncio.ensure_future(created.wait())
        try:
            # Waiting for a page of the context is bounded only while the other
            # pages make no progress: a queue that moves is not a stuck browser.
            while not task.done() and not created.is_set():
                finished = self._finished
                await asyncio.wait({task, waiter}, timeout=self.hard_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not task.done() and not created.is_set() and self._finished == finished:
                    break
            if not task.done() and created.is_set():
                await asyncio.wait({task}, timeout=self.hard_timeout)
            if not task.done():
                self.stats.inc_value("statecrawl/render_timeouts")
                what = ("rendering took" if created.is_set() else
                        "no rendered page finished while this one waited for a page,")
                raise DownloadTimeoutError(f"{what} over {self.hard_timeout:.0f} s "
                                           f"(2 x STATECRAWL_RENDER_TIMEOUT + 5)")
            return task.result()
        finally:
            waiter.cancel()
            self._created.pop(id(request), None)
            if not task.done():  # timed out, or this download was cancelled
                task.cancel()
                await asyncio.wait({task}, timeout=5)

    # -- waking the requests that wait for a page of a context that is gone --------------
    # scrapy-playwright forgets a context when it closes or its browser dies,
    # and a page's close event releases its context's page semaphore only if
    # the context is still known *by name*: when the context's close event comes
    # first (it does when Chromium dies), a request waiting on that semaphore
    # is never woken (it waited for hard_timeout). Woken, it finds the context
    # closed and scrapy-playwright retries it in a new one. No one takes a
    # forgotten context's semaphore again, so releasing more than was held is
    # harmless.

    async def _create_browser_context(self, *args: Any, **kwargs: Any) -> Any:
        wrapper = await super()._create_browser_context(*args, **kwargs)
        self._contexts.append(wrapper)
        return wrapper

    def _make_close_browser_context_callback(self, *args: Any, **kwargs: Any) -> Any:
        forget = super()._make_close_browser_context_callback(*args, **kwargs)

        def close_browser_context_callback() -> None:
            forget()
            self._wake_waiters_of_forgotten_contexts()

        return close_browser_context_callback

    async def _browser_disconnected_callback(self) -> None:
        await super()._browser_disconnected_callback()
        self._wake_waiters_of_forgotten_contexts()

    def _wake_waiters_of_forgotten_contexts(self) -> None:
        known = {id(wrapper) for wrapper in self.context_wrappers.values()}
        for wrapper in [w for w in self._contexts if id(w) not in known]:
            self._contexts.remove(wrapper)
            for _ in range(self._open + self.config.max_pages_per_context):
                wrapper.semaphore.release()

    async def _restart(self) -> None:
        """Close the browser once its pages are done; the next page launches a new one."""
        try:
            await self._idle.wait()
            browser = getattr(self, "browser", None)
            if browser is not None:
                logger.info("statecrawl: restarting the browser after %d pages", self._rendered)
                self.stats.inc_value("statecrawl/browser_restarts")
                await browser.close()  # the disconnected callback forgets it
                if getattr(self, "browser", None) is browser:
                    del self.browser
        except Exception:  # noqa: BLE001 - a failed close must not stop rendering
            logger.warning("statecrawl: closing the browser failed", exc_info=True)
        finally:
            self._rendered = 0
            self._gate.set()
