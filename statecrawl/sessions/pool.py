"""The session pool's middleware: each request gets its session and the session's proxy.

The pool itself -- which sessions exist, their counts, retirement, proxy
bindings -- is kept crawl-wide in Redis and seen through
:class:`statecrawl.sessions.hub.Sessions`; this middleware applies it to
requests. It is inactive (``NotConfigured``) unless
``STATECRAWL_SESSION_POOL_SIZE`` or ``STATECRAWL_PROXIES`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest, NotConfigured

from statecrawl.sessions.hub import Sessions
from statecrawl.sessions.store import session_id

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["ROTATIONS_META_KEY", "SESSION_META_KEY", "SessionMiddleware"]

#: ``request.meta`` key: the session id a request was sent with (worker-local).
SESSION_META_KEY = "_statecrawl_session"
_POOLED = "_statecrawl_pooled"  # the pool chose the session (cookiejar and proxy are ours)
_PROXY_SET = "_statecrawl_proxy_set"
#: ``request.meta`` key: how many times a request was retried with a new pool session.
ROTATIONS_META_KEY = "statecrawl_session_rotations"


class SessionMiddleware:
    """Give each request its session (``meta["cookiejar"]``) and the session's proxy.

    A request that names a ``cookiejar`` keeps it; with a pool, one that
    names none gets a pool session. The bound proxy goes into
    ``meta["proxy"]`` unless the request set one. A blocked status retires a
    pool session and sends the request again with another session (at most
    ``STATECRAWL_SESSION_MAX_ROTATIONS`` times). Before a response or error
    goes on, what this middleware set is taken off the request again, so a
    retried or redirected copy stored in the frontier never carries it.
    """

    def __init__(self, crawler: Crawler, sessions: Sessions) -> None:
        self.crawler = crawler
        self.sessions = sessions

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SessionMiddleware:
        sessions = Sessions.of(crawler)
        if not sessions.pool_enabled and not sessions.proxies:
            # off by default, so no message: Scrapy logs a message as a warning
            raise NotConfigured
        return cls(crawler, sessions)

    async def process_request(self, request: Request) -> None:
        meta = request.meta
        if SESSION_META_KEY in meta:
            return  # already set (a request sent again by a later middleware)
        if "cookiejar" in meta or not self.sessions.pool_enabled:
            session = session_id(meta.get("cookiejar"))
            self.sessions.use(session)
        else:
            session = await self.sessions.pick()
            meta["cookiejar"] = session
            meta[_POOLED] = True
        meta[SESSION_META_KEY] = session
        if "proxy" not in meta:
            proxy = await self.sessions.proxy_for(session)
            if proxy is not None:
                meta["proxy"] = proxy
                meta[_PROXY_SET] = True

    def _take_back(self, request: Request) -> tuple[str | None, bool]:
        meta = request.meta
        session = meta.pop(SESSION_META_KEY, None)
        pooled = bool(meta.pop(_POOLED, False))
        if pooled:
            meta.pop("cookiejar", None)
        if meta.pop(_PROXY_SET, False):
            meta.pop("proxy", None)
            meta.pop("_auth_proxy", None)
            request.headers.pop(b"Proxy-Authorization", None)
        return session, pooled

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        session, pooled = self._take_back(request)
        if session is None:
            return response
        status = response.status
        if status in self.sessions.blocked:
            if not pooled:
                self.sessions.record(session, ok=False)
                return response
            self.sessions.record(session, ok=False, retire=str(status))
            rotations = int(request.meta.get(ROTATIONS_META_KEY, 0))
            if rotations < self.sessions.max_rotations:
                self.crawler.stats.inc_value("statecrawl/session_rotations")
                retry = request.replace(dont_filter=True)
                retry.meta[ROTATIONS_META_KEY] = rotations + 1
                retry.meta.pop("is_start_request", None)
                return retry
            return response
        self.sessions.record(session, ok=status < 500)
        return response

    async def process_exception(self, request: Request, exception: Exception) -> None:
        session, _ = self._take_back(request)
        if session is not None and not isinstance(exception, IgnoreRequest):
            self.sessions.record(session, ok=False)
