"""Browser sessions that outlive workers: Playwright storage states kept in Redis.

A rendered page (scrapy-playwright, ``meta["playwright"] = True``) runs in a
browser *context*, which has its own cookies and localStorage: a site that
logs in with JavaScript keeps its token there, not in Scrapy's jar. A
context lives in one worker's browser, so this module saves the context's
Playwright storage state (``await context.storage_state()``: cookies +
localStorage per origin) under the request's session in Redis
(``sc:{id}:browser:<session>``, sealed like cookie jars), and creates the
context of that session on any other worker from it
(``new_context(storage_state=...)``, through scrapy-playwright's
``playwright_context_kwargs``).

The building blocks work without Scrapy (and are what the tests use):
:func:`save_storage_state` / :func:`load_storage_state` and
:func:`context_kwargs`. :class:`BrowserSessionMiddleware` wires them into a
crawl: for each Playwright request it names the context after the session
(``statecrawl-<session>``), passes the stored state and the session's proxy
when this worker's browser does not have that context (the first page, and
after a browser restart or crash), and after the response saves the
context's state again, in the background (at most once per
``STATECRAWL_SESSION_FLUSH_INTERVAL`` per session, and at close). The context kwargs are set at download time
and taken off before the response goes on: a storage state is a secret and
must not reach the frontier inside a stored request.

A stored state that is not a Playwright storage state (not JSON, or not its
shape) would fail every rendered page of the session: it is moved to the
crawl's dead-letter list instead, and the context starts fresh
(:meth:`~statecrawl.sessions.store.SessionStore.load_storage_state`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from statecrawl.frontier.serialize import dumps, json_type
from statecrawl.sessions.store import SessionStore, session_id

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from statecrawl.sessions.hub import Sessions

__all__ = [
    "BrowserSessionMiddleware", "check_storage_state", "context_kwargs", "context_name",
    "load_storage_state", "save_storage_state",
]

logger = logging.getLogger(__name__)

_CONTEXT_SET = "_statecrawl_context"  # worker-local: we named the context / set its kwargs
_STATE_TIMEOUT = 10.0  # seconds to wait for a storage state from the browser
#: Largest ``expires`` accepted in a storage state (Playwright's cookies take a double).
_MAX_EXPIRES = 2.0**63
_SAME_SITE = ("Strict", "Lax", "None")


def check_storage_state(state: Any) -> dict[str, Any]:
    """*state* if it has the shape of a Playwright storage state, else ValueError.

    A state Playwright would refuse (``new_context(storage_state=...)``) fails
    every rendered page of its session, so it is refused when it is read from
    Redis. Messages name the entry and the type found, never a value.
    """
    if not isinstance(state, dict):
        raise ValueError(f"a storage state is a JSON object, not {json_type(state)}")
    cookies, origins = state.get("cookies", []), state.get("origins", [])
    if not isinstance(cookies, list) or not isinstance(origins, list):
        raise ValueError("storage state: cookies and origins must be lists")
    for i, cookie in enumerate(cookies):
        where = f"storage state: cookies[{i}]"
        if not isinstance(cookie, dict):
            raise ValueError(f"{where} is {json_type(cookie)}, not an object")
        for key in ("name", "value", "domain", "path"):
            if not isinstance(cookie.get(key), str):
                raise ValueError(f"{where}.{key} is {json_type(cookie.get(key))}, not a string")
        expires = cookie.get("expires", -1)
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not (
                -_MAX_EXPIRES <= expires <= _MAX_EXPIRES):  # NaN fails this too
            raise ValueError(f"{where}.expires is not a number in range")
        for key in ("httpOnly", "secure"):
            if not isinstance(cookie.get(key, False), bool):
                raise ValueError(f"{where}.{key} is {json_type(cookie.get(key))}, not true/false")
        if cookie.get("sameSite", "Lax") not in _SAME_SITE:
            raise ValueError(f"{where}.sameSite is not Strict, Lax or None")
    for i, origin in enumerate(origins):
        where = f"storage state: origins[{i}]"
        if not isinstance(origin, dict) or not isinstance(origin.get("origin"), str):
            raise ValueError(f"{where} is not an object with an origin string")
        entries = origin.get("localStorage", [])
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str)
                and isinstance(e.get("value"), str) for e in entries):
            raise ValueError(f"{where}.localStorage is not a list of name/value strings")
    dumps(state, "storage state")  # what a save writes back: plain JSON, not nested too deeply
    return state


def context_name(session: str) -> str:
    """The scrapy-playwright context name of a session."""
    return f"statecrawl-{session}"


async def save_storage_state(store: SessionStore, session: str, context: Any) -> int:
    """Save *context*'s Playwright storage state for *session*; returns bytes stored."""
    state = await context.storage_state()
    return await store.save_storage_state(session, state)


async def load_storage_state(store: SessionStore, session: str) -> dict[str, Any] | None:
    """The storage state saved for *session*, or None (none, or unreadable and quarantined)."""
    return await store.load_storage_state(session)


def _playwright_proxy(proxy: str) -> dict[str, str]:
    parts = urlsplit(proxy)
    server = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    out = {"server": server}
    if parts.username:
        out["username"] = unquote(parts.username)
        out["password"] = unquote(parts.password or "")
    return out


async def context_kwargs(store: SessionStore, session: str, *, proxy: str | None = None,
                         base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``playwright_context_kwargs`` that continue *session*: its storage state and proxy."""
    kwargs = dict(base or {})
    state = await store.load_storage_state(session)
    if state is not None:
        kwargs["storage_state"] = state
    if proxy:
        kwargs.setdefault("proxy", _playwright_proxy(proxy))
    return kwargs


class BrowserSessionMiddleware:
    """Mount and save browser contexts' storage states per session (see the module docstring)."""

    def __init__(self, crawler: Crawler, sessions: Sessions) -> None:
        self.crawler = crawler
        self.sessions = sessions
        self._used: set[str] = set()  # sessions rendered by this worker
        self._saved: dict[str, bytes] = {}  # session -> last storage state saved
        self._last_save: dict[str, float] = {}
        self._saving: dict[str, asyncio.Task[None]] = {}
        sessions.before_close.append(self._save_all)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BrowserSessionMiddleware:
        from statecrawl.sessions.hub import Sessions

        return cls(crawler, Sessions.of(crawler))

    async def process_request(self, request: Request) -> None:
        meta = request.meta
        if not meta.get("playwright") or "playwright_context" in meta:
            return  # not rendered, or a context the spider manages itself
        session = session_id(meta.get("cookiejar"))
        name = context_name(session)
        meta["playwright_context"] = name
        kwargs_set = False
        # The context is created from these kwargs only if this worker's browser does
        # not have it: at the first page, and after a browser restart or crash.
        if self._context(name) is None:
            store = await self.sessions.open()
            meta["playwright_context_kwargs"] = await context_kwargs(
                store, session, proxy=meta.get("proxy"), base=meta.get("playwright_context_kwargs"))
            kwargs_set = True
        self._used.add(session)
        meta[_CONTEXT_SET] = (session, kwargs_set)

    def _take_back(self, request: Request) -> str | None:
        taken = request.meta.pop(_CONTEXT_SET, None)
        if taken is None:
            return None
        session, kwargs_set = taken
        request.meta.pop("playwright_context", None)
        if kwargs_set:
            request.meta.pop("playwright_context_kwargs", None)
        return str(session)

    async def process_response(self, request: Request, response: Response) -> Response:
        session = self._take_back(request)
        if session is not None:
            loop = asyncio.get_running_loop()
            running = self._saving.get(session)
            due = loop.time() - self._last_save.get(session, 0.0) >= self.sessions.flush_interval
            if due and (running is None or running.done()):
                # in the background: the response does not wait for the browser
                self._last_save[session] = loop.time()
                self._saving[session] = asyncio.ensure_future(self._save(session))
        return response

    async def process_exception(self, request: Request, exception: Exception) -> None:
        self._take_back(request)

    def _context(self, name: str) -> Any:
        """scrapy-playwright's context object for *name*, if this worker's browser has it."""
        engine = self.crawler.engine
        handlers = getattr(getattr(engine, "downloader", None), "handlers", None)
        for scheme in ("https", "http"):
            handler = getattr(handlers, "_handlers", {}).get(scheme)
            wrapper = getattr(handler, "context_wrappers", {}).get(name)
            if wrapper is not None:
                return wrapper.context
        return None

    async def _save(self, session: str) -> None:
        context = self._context(context_name(session))
        if context is None or self.sessions.is_retired(session):
            return
        try:
            state = await asyncio.wait_for(context.storage_state(), _STATE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a closed or crashed context: nothing to save
            logger.debug("statecrawl: no storage state for session %s: %s", session, exc)
            return
        body = dumps(state, "storage state")
        if self._saved.get(session) == body:
            return
        store = await self.sessions.open()
        nbytes = await store.save_storage_state(session, state)
        self._saved[session] = body
        self.crawler.stats.inc_value("statecrawl/storage_states_saved")
        self.crawler.stats.inc_value("statecrawl/storage_state_bytes", nbytes)

    async def _save_all(self) -> None:
        """At close: the last state of every session this worker rendered."""
        pending = [t for t in self._saving.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=_STATE_TIMEOUT)
        for session in sorted(self._used):
            await self._save(session)
