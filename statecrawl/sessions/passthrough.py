"""Stateless sessions: cookies and headers the caller sends with every request, kept nowhere.

A caller who holds a session elsewhere (a token from their own login, an
API key) and does not want statecrawl to keep it server-side gives it to the
spider -- ``scrapy crawl site -a cookies='{"sid": "..."}' -a headers='{"Authorization": "..."}'``,
or any spider's ``statecrawl_cookies`` / ``statecrawl_headers`` attributes
(dicts of strings). Each worker process has them in memory only.

They must not reach Redis by any path, so they are added where nothing is
stored: at download time, by :class:`PassThroughMiddleware`, which runs
after the cookies middleware (so the jar's ``Cookie`` header is already
there and a pass-through cookie replaces a jar cookie of the same name).
Requests are stored when they are scheduled, before this point; and before
a response or an error travels back through the middlewares that can
schedule a copy of the request (retry, redirect, session rotation), the
headers are taken off it again, so no copy carries them. They are not in
the crawl's recorded arguments either (``sc:{id}:meta`` ``args``), so a
worker joining with ``statecrawl worker`` does not have them: pass them to
each worker.

They go only to the crawl's own hosts: to a request whose URL the worker's
:class:`~statecrawl.frontier.scope.FetchScope` admits (the ``site`` spider's host and
port, or the spider's ``allowed_domains``). A request elsewhere -- a link or
redirect to another site, a request planted in Redis -- is sent without
them; a spider that declares no scope sends them nowhere (logged once).

Cookies the *site* sets still go to the session's jar in Redis as usual;
add ``-s COOKIES_ENABLED=false`` to keep nothing at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from statecrawl.frontier.scope import FetchScope

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["PassThroughMiddleware", "RestoresHeaders"]

logger = logging.getLogger(__name__)

_SAVED = "_statecrawl_passthrough"  # worker-local: header values before we set ours


def _cookie_pairs(header: bytes) -> list[tuple[str, str]]:
    pairs = []
    for part in header.decode("latin-1").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            pairs.append((name, value))
    return pairs


class RestoresHeaders:
    """For a middleware that sets headers for one download only.

    Its ``process_request`` saves the values it replaces in
    ``request.meta[saved_key]`` (name -> values; none: absent); they are put
    back before the response or error travels on to the middlewares that may
    schedule a copy of the request (retry, redirect).
    """

    saved_key: str

    def _restore(self, request: Request) -> None:
        for name, values in (request.meta.pop(self.saved_key, None) or {}).items():
            if values:
                request.headers.setlist(name, values)
            else:
                request.headers.pop(name, None)

    def process_response(self, request: Request, response: Response) -> Response:
        self._restore(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._restore(request)


class PassThroughMiddleware(RestoresHeaders):
    """Add the spider's pass-through cookies and headers at download time (module docstring)."""

    saved_key = _SAVED

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._cookies: dict[str, str] | None = None
        self._headers: dict[str, str] = {}
        self._scope: FetchScope | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PassThroughMiddleware:
        return cls(crawler)

    def _load(self) -> None:
        spider: Any = self.crawler.spider
        self._cookies = {str(k): str(v) for k, v in (getattr(spider, "statecrawl_cookies", None)
                                                     or {}).items()}
        self._headers = {str(k): str(v) for k, v in (getattr(spider, "statecrawl_headers", None)
                                                     or {}).items()}
        self._scope = FetchScope.for_spider(spider)
        if (self._cookies or self._headers) and self._scope is None:
            logger.warning("statecrawl: spider %r declares no scope (allowed_domains), so its "
                           "pass-through cookies and headers are sent with no request",
                           getattr(spider, "name", "?"))

    def process_request(self, request: Request) -> None:
        if self._cookies is None:
            self._load()
        assert self._cookies is not None
        if not (self._cookies or self._headers) or _SAVED in request.meta:
            return
        if self._scope is None or not self._scope.allows(request.url):
            return  # not one of the crawl's hosts
        headers = request.headers
        saved: dict[str, list[bytes]] = {}
        for name, value in self._headers.items():
            saved[name] = headers.getlist(name)
            headers[name] = value
        if self._cookies:
            saved.setdefault("Cookie", headers.getlist("Cookie"))
            pairs = [(n, v) for raw in headers.getlist("Cookie") for n, v in _cookie_pairs(raw)
                     if n not in self._cookies]
            pairs += list(self._cookies.items())
            headers["Cookie"] = "; ".join(f"{n}={v}" for n, v in pairs)
        request.meta[_SAVED] = saved

