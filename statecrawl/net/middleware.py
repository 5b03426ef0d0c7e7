"""``NetGuardMiddleware``: the guard's report, and its fail-safe, in the downloader.

The check itself is in the resolver (:mod:`statecrawl.net.resolver`): this
middleware decides nothing about addresses. It does three things around it:

* *A clear, final error.* A refused connection reaches Scrapy as a DNS
  error (``CannotResolveHostError``, Twisted's ``DNSLookupError``), which
  ``RetryMiddleware`` would retry twice, each time refused again, and which
  says nothing of why. When the resolver refused the request's host, this
  middleware raises :class:`~statecrawl.exceptions.AddressRefused` instead
  (``refused: 127.0.0.1 is loopback (STATECRAWL_NET_ALLOW to allow)``),
  counts it in ``statecrawl/net/refused`` and logs it as a warning. It sits
  at priority 555, just above ``RetryMiddleware`` (550): exceptions travel
  from high priorities to low, so every other middleware's
  ``process_exception`` (cookies, sessions, pass-through headers putting
  things back) still runs, and ``RetryMiddleware`` never sees the error.
  ``AddressRefused`` is not an ``IgnoreRequest``: the ``site`` spider
  records the page with the error, so a user learns why a URL gave nothing.
* *Fail closed.* The resolver is installed by Scrapy's ``CrawlerProcess``
  from the process's settings. If the guard is on for this crawler but the
  reactor's resolver is not the guarded one (the guard switched on in a
  spider's ``custom_settings``, a ``CrawlerRunner`` that installs no
  resolver, a reactorless Scrapy), the first request finds out: the spider
  is closed (``net_guard_unavailable``) and no request is sent.
* *Naming what the guard does not see.* A request sent through a proxy or
  rendered in the browser is counted (``statecrawl/net/unguarded/proxy``,
  ``statecrawl/net/unguarded/browser``) and named once in the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.error import DNSLookupError

from statecrawl.exceptions import AddressRefused
from statecrawl.frontier._engine import fail_exit
from statecrawl.net.addresses import ALLOW_SETTING, Allowlist
from statecrawl.net.resolver import GUARD_SETTING, GuardedResolver

try:  # Scrapy 2.14+ wraps Twisted's DNSLookupError in its own
    from scrapy.exceptions import CannotResolveHostError
    _DNS_ERRORS: tuple[type[Exception], ...] = (CannotResolveHostError, DNSLookupError)
except ImportError:  # pragma: no cover - older Scrapy
    _DNS_ERRORS = (DNSLookupError,)

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["MIDDLEWARE_PRIORITY", "NetGuardMiddleware"]

logger = logging.getLogger(__name__)

#: Just above RetryMiddleware (550), below every other middleware with a process_exception.
MIDDLEWARE_PRIORITY = 555
_UNGUARDED = {
    "proxy": "requests sent through a proxy: the proxy resolves and connects to the target "
             "(only the proxy's own address is checked)",
    "browser": "pages rendered in the browser: Chromium resolves and connects on its own",
}


class NetGuardMiddleware:
    """Report refused connections as ``AddressRefused`` (not retried); fail closed without the resolver."""

    def __init__(self, crawler: Crawler, allow: Allowlist) -> None:
        self.crawler = crawler
        self.allow = allow
        self.resolver: GuardedResolver | None = None
        self.unavailable: str | None = None  # why the guard cannot work in this process
        self._named: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NetGuardMiddleware:
        if not crawler.settings.getbool(GUARD_SETTING):
            raise NotConfigured  # off by default: no message (Scrapy logs one as a warning)
        return cls(crawler, Allowlist.from_settings(crawler.settings))

    def process_request(self, request: Request) -> None:
        if self.resolver is None and self.unavailable is None:
            self._find_resolver()
        if self.unavailable is not None:
            raise AddressRefused(f"refused: {self.unavailable}")

    def process_response(self, request: Request, response: Response) -> Response:
        self._note_unguarded(request, response.meta if response.request is not None else {})
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._note_unguarded(request, {})
        if self.resolver is None or not isinstance(exception, _DNS_ERRORS):
            return
        message = self._refusal(request)
        if message is None:
            return  # a real DNS failure: retried as usual
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("statecrawl/net/refused")
        logger.warning("%(request)s %(refusal)s", {"request": request, "refusal": message},
                       extra={"crawler": self.crawler})
        # from None: the DNS errors it replaces are how the resolver says it, not what happened
        raise AddressRefused(message) from None

    def _refusal(self, request: Request) -> str | None:
        """Why the resolver refused the host connected to (the request's or its proxy's), or None."""
        assert self.resolver is not None
        proxy = request.meta.get("proxy")
        if not proxy:
            refusal = self.resolver.refusal_for(urlparse_cached(request).hostname or "")
            return None if refusal is None else str(refusal)
        refusal = self.resolver.refusal_for(urlsplit(proxy).hostname or "")
        return None if refusal is None else f"{refusal}, for the request's proxy {proxy}"

    def _find_resolver(self) -> None:
        from twisted.internet import reactor

        resolver = getattr(reactor, "nameResolver", None)
        if not isinstance(resolver, GuardedResolver):
            self.unavailable = (
                f"{GUARD_SETTING} is on, but the reactor's DNS resolver is "
                f"{type(resolver).__name__}, not statecrawl's GuardedResolver: set {GUARD_SETTING} "
                "in the project settings or with -s (not in a spider's custom_settings) and run "
                "the crawl with scrapy crawl / CrawlerProcess, which install it")
            logger.error("%s; closing the spider", self.unavailable, extra={"crawler": self.crawler})
            self._close_spider("net_guard_unavailable")
            return
        self.resolver = resolver
        if resolver.allow != self.allow:
            logger.warning(
                "%s differs between this spider's settings (%s) and the process's (%s): the "
                "process's applies", ALLOW_SETTING, self.allow, resolver.allow,
                extra={"crawler": self.crawler})
        logger.info("Net guard on: connections to loopback, private, link-local, metadata and "
                    "reserved addresses are refused; %s: %s", ALLOW_SETTING, resolver.allow,
                    extra={"crawler": self.crawler})

    def _note_unguarded(self, request: Request, response_meta: dict[str, Any]) -> None:
        kinds = []
        if request.meta.get("proxy"):
            kinds.append("proxy")
        if request.meta.get("playwright") or response_meta.get("statecrawl_renderer") == "browser":
            kinds.append("browser")
        for kind in kinds:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value(f"statecrawl/net/unguarded/{kind}")
            if kind not in self._named:
                self._named.add(kind)
                logger.warning("The net guard does not check the addresses reached by %s (%s)",
                               _UNGUARDED[kind], request, extra={"crawler": self.crawler})

    def _close_spider(self, reason: str) -> None:
        fail_exit(self.crawler)  # `scrapy crawl` exits with status 1
        engine = self.crawler.engine
        if engine is None:
            return
        close = getattr(engine, "close_spider_async", None)
        if close is not None:
            deferred_from_coro(close(reason=reason)).addErrback(
                lambda f: logger.error("could not close the spider: %s", f.value))
        else:  # pragma: no cover - Scrapy < 2.14
            engine.close_spider(self.crawler.spider, reason)
