"""Cookie jars that outlive the worker: Scrapy's cookies middleware, kept in Redis.

Scrapy's ``CookiesMiddleware`` keeps one in-memory jar per ``meta["cookiejar"]``
value; a killed worker takes its sessions with it, and the worker that
continues its requests starts logged out. :class:`RedisCookiesMiddleware`
(the add-on puts it in place of Scrapy's, at the same priority) keeps the
same convention and the same cookie semantics -- it *is* Scrapy's middleware,
with Scrapy's :class:`~scrapy.http.cookies.CookieJar` and the standard
library's cookie policy doing all parsing, matching and expiry -- but each
jar is loaded from Redis on its first use in a worker and every change goes
back to Redis:

* **Diffs, not snapshots.** Each jar (:mod:`statecrawl.sessions.jar`) notes
  which cookies were set or cleared; only those are written, and only if
  their JSON differs from what Redis has.
* **Batched, off the request path.** Changes are written by the session
  flush (:mod:`statecrawl.sessions.hub`), one pipeline per
  ``STATECRAWL_SESSION_FLUSH_INTERVAL``, on the asyncio loop. A SIGKILL
  loses at most that interval of cookie changes; the login waits for its
  cookies to be written before it announces the new session.
* **Expired cookies are dropped** when a jar is loaded (and deleted from
  Redis), and by Scrapy's periodic ``clear_expired_cookies``.

Two workers using one session at once each write the cookies they were
sent; for one cookie the last write wins. A worker reloads the jar when the
crawl's login generation changes (:mod:`statecrawl.sessions.login`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.cookies import (
    CookiesMiddleware as _ScrapyCookiesMiddleware,
)
from scrapy.exceptions import NotConfigured

from statecrawl.exceptions import SecretKeyError
from statecrawl.sessions.hub import Sessions, requeue
from statecrawl.sessions.store import session_id

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["RedisCookiesMiddleware"]


class RedisCookiesMiddleware(_ScrapyCookiesMiddleware):
    """Scrapy's ``CookiesMiddleware`` with jars kept in Redis (see the module docstring).

    ``COOKIES_ENABLED`` and ``COOKIES_DEBUG`` and the ``cookiejar`` and
    ``dont_merge_cookies`` meta keys work as in Scrapy.
    """

    def __init__(self, crawler: Crawler, debug: bool = False) -> None:
        super().__init__(debug)
        self.crawler = crawler
        self.sessions: Sessions = Sessions.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisCookiesMiddleware:  # type: ignore[override]
        if not crawler.settings.getbool("COOKIES_ENABLED"):
            raise NotConfigured("COOKIES_ENABLED is off")
        return cls(crawler, crawler.settings.getbool("COOKIES_DEBUG"))

    async def process_request(self, request: Request) -> Request | Response | None:  # type: ignore[override]
        if request.meta.get("dont_merge_cookies", False):
            return None
        try:
            session = await self.sessions.jar(session_id(request.meta.get("cookiejar")))
        except SecretKeyError:  # logged once; the worker is closing
            return requeue(request)  # kept for a worker that has the key
        cookies = self._get_request_cookies(session.jar, request)
        self._process_cookies(cookies, jar=session.jar, request=request)
        request.headers.pop("Cookie", None)
        session.jar.add_cookie_header(request)
        self._debug_cookie(request)
        self.sessions.jar_changed(session)
        return None

    async def process_response(  # type: ignore[override]
        self, request: Request, response: Response
    ) -> Request | Response:
        if request.meta.get("dont_merge_cookies", False):
            return response
        try:
            session = await self.sessions.jar(session_id(request.meta.get("cookiejar")))
        except SecretKeyError:
            return response  # the worker is closing (see process_request)
        cookies = session.jar.make_cookies(response, request)
        self._process_cookies(cookies, jar=session.jar, request=request)
        self._debug_set_cookie(response)
        self.sessions.jar_changed(session)
        # The jar sets it again at the next download; a copy scheduled from here
        # (retry, redirect) must not carry session cookies into the frontier.
        request.headers.pop("Cookie", None)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if not request.meta.get("dont_merge_cookies", False):
            request.headers.pop("Cookie", None)
