"""Wait until a rendered page has settled: its content is there, not just its ``load`` event.

Most script-built pages fill themselves in *after* ``load``: data comes from
``fetch()``, a timer or a client-side route change, then the DOM is written.
A page rendered "at load" loses exactly that content. So after navigation a
rendered page waits until it has been **quiet** for ``quiet_ms`` (default
``STATECRAWL_RENDER_QUIET_MS``, 40 ms, counted from ``load`` at the
earliest), but never longer than ``settle_ms`` (default
``STATECRAWL_RENDER_SETTLE_MS``, 5,000 ms; 0 turns settling off).

*Quiet* means all three of:

* **no network request in flight** -- every request of the page and its
  frames (``fetch``, XHR, a dynamic ``import()``, scripts, iframes), counted
  from Playwright's ``request`` / ``requestfinished`` / ``requestfailed``
  events, which are attached before navigation; blocked resources (images,
  fonts, media) are aborted at once and so never hold a page;
* **no pending short timer** (and no ``fetch()`` or XHR, counted in the
  page too, so that none slips between its start and Playwright's event
  reaching the worker) -- a ``setTimeout`` or ``requestIdleCallback``
  that will fire within ``settle_ms`` is work still to come: a page whose
  content appears after a 2 s timer is waited for, one whose only timer is
  a 30 s analytics ping is not. ``setInterval`` and animation frames are
  not counted (they never end);
* **no DOM change** (a ``MutationObserver`` over the whole document:
  nodes added or removed, text changed, ``hidden`` toggled) and no request
  or timer finished for the last ``quiet_ms``, and two animation frames
  since (observer callbacks, such as an infinite scroll's
  ``IntersectionObserver``, run in those frames; on a busy machine they
  come late, and so does the verdict).

The timers and the observer come from an init script that runs in every
frame before the page's own scripts (:data:`SETTLE_SCRIPT`); it wraps
``setTimeout``/``clearTimeout``, ``requestIdleCallback``, ``fetch`` and
``XMLHttpRequest.send`` and nothing else.
A page that never settles (a clock ticking every 20 ms, a long-poll, a
timer that re-arms itself) is taken as it is when ``settle_ms`` runs out:
settling is a wait, never an error. A page that navigates away while it
is waited for (a script redirect) is followed: the init script runs again
in the new document.

How long each page waited, and whether it settled or hit the bound, is in
the response's ``meta["statecrawl_settle"]`` (``{"ms": 412, "settled":
true}``) and in the stats ``statecrawl/render/settled``,
``statecrawl/render/settle_max_reached`` and ``statecrawl/render/settle_ms``
(total milliseconds spent waiting).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from scrapy.utils.misc import load_object
from scrapy_playwright.page import PageMethod

if TYPE_CHECKING:
    from playwright.async_api import Page
    from playwright.async_api import Request as PlaywrightRequest
    from scrapy import Request

__all__ = ["SETTLE_META_KEY", "SETTLE_SCRIPT", "Settle", "settle_page"]

SETTLE_META_KEY = "statecrawl_settle"

#: Installed before any script of the page (``page.add_init_script``), in every
#: frame. ``__LIMIT__`` is replaced by the page's ``settle_ms``.
SETTLE_SCRIPT = r"""
(() => {
  if (Object.prototype.hasOwnProperty.call(window, "__statecrawlSettle")) return;
  const LIMIT = __LIMIT__;
  const now = () => performance.now();
  let last = now();
  const pending = new Set();
  let frames = 0, framesAtLast = 0;  // rendering steps: observer callbacks run in them
  const touch = () => { last = now(); framesAtLast = frames; };
  const track = (schedule, cancel, key, limitOf) => {
    const original = window[schedule], originalCancel = window[cancel];
    if (typeof original !== "function") return;
    window[schedule] = function (callback, ...rest) {
      if (typeof callback !== "function" || !(limitOf(rest) <= LIMIT)) {
        return original.call(window, callback, ...rest);
      }
      let id;
      const run = function (...args) {
        pending.delete(key + id);
        touch();
        return callback.apply(this, args);
      };
      id = original.call(window, run, ...rest);
      pending.add(key + id);
      return id;
    };
    if (typeof originalCancel === "function") {
      window[cancel] = function (id) {
        pending.delete(key + id);
        return originalCancel.call(window, id);
      };
    }
  };
  // fetch() and XHR are also counted here, in the page: Playwright's request
  // event reaches Python a little after the page asked, and a probe must not
  // slip in between (an observer callback that starts a fetch and nothing else).
  let calls = 0;
  const started = () => { const key = "n" + calls++; pending.add(key); return key; };
  const ended = (key) => { pending.delete(key); touch(); };
  const originalFetch = window.fetch;
  if (typeof originalFetch === "function") {
    window.fetch = function (...args) {
      const key = started();
      let promise;
      try {
        promise = originalFetch.apply(this, args);
      } catch (error) {
        ended(key);
        throw error;
      }
      promise.then(() => ended(key), () => ended(key));
      return promise;
    };
  }
  const xhr = window.XMLHttpRequest && window.XMLHttpRequest.prototype;
  if (xhr && typeof xhr.send === "function") {
    const originalSend = xhr.send;
    xhr.send = function (...args) {
      const key = started();
      this.addEventListener("loadend", () => ended(key), { once: true });
      try {
        return originalSend.apply(this, args);
      } catch (error) {
        ended(key);
        throw error;
      }
    };
  }
  track("setTimeout", "clearTimeout", "t", (rest) => Number(rest[0]) || 0);
  track("requestIdleCallback", "cancelIdleCallback", "i",
        (rest) => (rest[0] && Number(rest[0].timeout)) || 0);
  // The parser's own insertions are the page as served (and observing them
  // costs seconds on a huge page): changes are watched from DOMContentLoaded
  // on, and the quiet period starts at load at the earliest.
  const observe = () => new MutationObserver(touch).observe(document, {
    subtree: true, childList: true, characterData: true,
    attributes: true, attributeFilter: ["hidden", "open"],
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", observe, { once: true, capture: true });
  } else {
    observe();
  }
  document.addEventListener("DOMContentLoaded", touch, true);
  window.addEventListener("load", () => {
    touch();
    const raf = window.requestAnimationFrame.bind(window);
    const count = () => { frames++; raf(count); };
    raf(count);
  }, true);
  Object.defineProperty(window, "__statecrawlSettle", {  // what settle_page() reads
    value: () => ({ idle: now() - last, pending: pending.size, frames: frames - framesAtLast }),
    enumerable: false,
  });
})();
"""

_PROBE = "() => window.__statecrawlSettle ? window.__statecrawlSettle() : null"

#: Seconds between two looks at a page that is not quiet yet.
_POLL = 0.025
#: Rendering steps (animation frames) a quiet page must also have gone through:
#: ``IntersectionObserver`` and ``ResizeObserver`` callbacks run in them, and a
#: busy CPU delays them past any fixed number of milliseconds.
_FRAMES = 2
#: ... unless the page has been quiet this many quiet periods (no frames come).
_FRAMELESS = 10


@dataclass
class _Network:
    """The requests of one page still in flight, and when the last one ended."""

    open: set[PlaywrightRequest] = field(default_factory=set)
    last: float = 0.0  # loop time of the last request start or end

    def started(self, request: PlaywrightRequest) -> None:
        self.open.discard(request.redirected_from)  # type: ignore[arg-type]
        self.open.add(request)
        self.last = asyncio.get_running_loop().time()

    def ended(self, request: PlaywrightRequest) -> None:
        self.open.discard(request)
        self.last = asyncio.get_running_loop().time()


#: Each open page's network, for as long as the page object lives.
_NETWORKS: weakref.WeakKeyDictionary[Page, _Network] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Settle:
    """One page's settle bounds, in milliseconds: quiet for ``quiet_ms``, at most ``max_ms``."""

    quiet_ms: float
    max_ms: float

    async def init_page(self, page: Page, request: Request) -> None:
        """``playwright_page_init_callback``: before navigation, watch the network, add the script."""
        network = _NETWORKS[page] = _Network(last=asyncio.get_running_loop().time())
        page.on("request", network.started)
        page.on("requestfinished", network.ended)
        page.on("requestfailed", network.ended)
        await page.add_init_script(SETTLE_SCRIPT.replace("__LIMIT__", str(int(self.max_ms))))

    def init_callback(self, then: Any = None) -> Callable[[Page, Request], Awaitable[None]]:
        """The page's ``playwright_page_init_callback``: :meth:`init_page`, then ``then``.

        ``then`` is the callback the request already had (a callable or an
        import path, set by a downloader middleware before this one): it
        still runs, after the settle script is installed.
        """
        if then is None:
            return self.init_page
        following = load_object(then) if isinstance(then, str) else then

        async def init_page(page: Page, request: Request) -> None:
            await self.init_page(page, request)
            await following(page, request)

        return init_page

    def page_method(self) -> PageMethod:
        """The page method that waits (its ``result`` is the ``statecrawl_settle`` dict)."""
        return PageMethod(settle_page, self.quiet_ms, self.max_ms)


async def settle_page(page: Page, quiet_ms: float, max_ms: float) -> dict[str, Any]:
    """Wait until *page* is quiet (see the module docstring) or *max_ms* have passed. Never raises."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + max_ms / 1000
    quiet = quiet_ms / 1000
    network = _NETWORKS.get(page) or _Network(last=start)
    while True:
        try:
            state = await page.evaluate(_PROBE)
        except Exception:  # noqa: BLE001 - a navigation replaced the document: look again
            state = {"idle": 0, "pending": 0}
        now = loop.time()
        if state is None:  # no script access (a download, an error page): network only
            state = {"idle": quiet * 1000, "pending": 0}
        idle = min(float(state.get("idle", 0)) / 1000, now - network.last)
        busy = bool(network.open) or int(state.get("pending", 0)) > 0
        framed = int(state.get("frames", _FRAMES)) >= _FRAMES or idle >= _FRAMELESS * quiet
        if not busy and idle >= quiet and framed:
            return {"ms": round((now - start) * 1000), "settled": True}
        if now >= deadline:
            return {"ms": round((now - start) * 1000), "settled": False}
        wait = _POLL if busy else max(quiet - idle, 0.01)
        await asyncio.sleep(min(wait, deadline - now))
