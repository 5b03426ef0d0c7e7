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
* *The browser's refusals.* Chromium connects through the guard's proxy
  (:mod:`statecrawl.net.proxy`). Each connection it refuses (a document, a
  redirect, a script, a ``fetch``, a WebSocket) is counted in
  ``statecrawl/net/refused/browser`` and logged as a warning; a rendered
  page whose own document was refused fails with ``AddressRefused`` (not
  retried) like an HTTP download, counted in ``statecrawl/net/refused``. A
  rendered request reaching this middleware with no guard proxy running in
  the process is refused (fail closed).
* *Naming what the guard does not see.* A request sent through a proxy is
  counted (``statecrawl/net/unguarded/proxy``) and named once in the log.

:class:`BrowserProxyRelay` (priority 970, after the browser sessions' 960)
points a browser context's own proxy at the guard's relay to it, so that
the proxy is checked at connect time as on the HTTP path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.error import DNSLookupError

from statecrawl.exceptions import AddressRefused
from statecrawl.frontier._engine import fail_exit
from statecrawl.net.addresses import ALLOW_SETTING, Allowlist, Refusal
from statecrawl.net.proxy import BYPASS, GuardProxy, running_proxy
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

__all__ = ["MIDDLEWARE_PRIORITY", "RELAY_PRIORITY", "BrowserProxyRelay", "NetGuardMiddleware"]

logger = logging.getLogger(__name__)

#: Just above RetryMiddleware (550), below every other middleware with a process_exception.
MIDDLEWARE_PRIORITY = 555
#: After BrowserSessionMiddleware (960), which sets a context's proxy.
RELAY_PRIORITY = 970
_UNGUARDED = {
    "proxy": "requests sent through a proxy: the proxy resolves and connects to the target "
             "(only the proxy's own address is checked)",
}
#: Worker-local: the proxy a request was sent through, kept past the session middleware's
#: taking ``meta["proxy"]`` back (it answers before this middleware does).
PROXY_SEEN_KEY = "_statecrawl_net_proxy"
#: How Chromium reports a connection the guard's SOCKS proxy refused.
_BROWSER_REFUSED = ("ERR_SOCKS_CONNECTION_FAILED", "ERR_PROXY_CONNECTION_FAILED",
                    "ERR_TUNNEL_CONNECTION_FAILED")


class NetGuardMiddleware:
    """Report refused connections as ``AddressRefused`` (not retried); fail closed without the resolver."""

    def __init__(self, crawler: Crawler, allow: Allowlist, proxy: GuardProxy | None = None) -> None:
        self.crawler = crawler
        self.allow = allow
        self.resolver: GuardedResolver | None = None
        self.unavailable: str | None = None  # why the guard cannot work in this process
        self.proxy = proxy  # the browser's guard (None: rendered requests are refused)
        self._named: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NetGuardMiddleware:
        if not crawler.settings.getbool(GUARD_SETTING):
            raise NotConfigured  # off by default: no message (Scrapy logs one as a warning)
        middleware = cls(crawler, Allowlist.from_settings(crawler.settings), running_proxy())
        if middleware.proxy is not None:
            from twisted.internet import reactor

            # the proxy's thread calls this: hand each refusal to the reactor's
            unsubscribe = middleware.proxy.subscribe(
                lambda refusal: reactor.callFromThread(middleware._browser_refused, refusal))
            crawler.signals.connect(lambda: unsubscribe(), signal=signals.engine_stopped, weak=False)
        return middleware

    def process_request(self, request: Request) -> None:
        if self.resolver is None and self.unavailable is None:
            self._find_resolver()
        if self.unavailable is not None:
            raise AddressRefused(f"refused: {self.unavailable}")
        if request.meta.get("playwright") and self.proxy is None:
            raise AddressRefused(
                f"refused: {GUARD_SETTING} is on, but the browser is not behind the guard's proxy "
                "in this process (statecrawl.Addon sets it up; see statecrawl.net.proxy)")

    def process_response(self, request: Request, response: Response) -> Response:
        self._note_unguarded(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._note_unguarded(request)
        if request.meta.get("playwright"):
            message = self._browser_refusal(request, exception)
        elif self.resolver is None or not isinstance(exception, _DNS_ERRORS):
            return
        else:
            message = self._refusal(request)
        if message is None:
            return  # a real DNS or network failure: retried as usual
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("statecrawl/net/refused")
        logger.warning("%(request)s %(refusal)s", {"request": request, "refusal": message},
                       extra={"crawler": self.crawler})
        # from None: the DNS errors it replaces are how the resolver says it, not what happened
        raise AddressRefused(message) from None

    def _refusal(self, request: Request) -> str | None:
        """Why the resolver refused the host connected to (the request's or its proxy's), or None."""
        assert self.resolver is not None
        proxy = _proxy_of(request)
        if not proxy:
            refusal = self.resolver.refusal_for(urlparse_cached(request).hostname or "")
            return None if refusal is None else str(refusal)
        refusal = self.resolver.refusal_for(urlsplit(proxy).hostname or "")
        return None if refusal is None else f"{refusal}, for the request's proxy {proxy}"

    def _browser_refusal(self, request: Request, exception: Exception) -> str | None:
        """Why the guard's proxy refused a rendered page's document (or its proxy), or None."""
        if self.proxy is None:
            return None
        proxy = _proxy_of(request)
        if proxy:
            # a refused relay closes the connection: Chromium names no proxy error
            refusal = self.proxy.refusal_for(urlsplit(proxy).hostname or "")
            return None if refusal is None else f"{refusal}, for the request's proxy {proxy}"
        if not any(code in str(exception) for code in _BROWSER_REFUSED):
            return None
        refusal = self.proxy.refusal_for(urlparse_cached(request).hostname or "")
        return None if refusal is None else str(refusal)

    def _browser_refused(self, refusal: Refusal) -> None:
        """A connection Chromium asked the guard's proxy for was refused (in the reactor's thread)."""
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("statecrawl/net/refused/browser")
        logger.warning("browser connection %s", refusal, extra={"crawler": self.crawler})

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

    def _note_unguarded(self, request: Request) -> None:
        for kind in ["proxy"] if _proxy_of(request) else []:
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


def _proxy_of(request: Request) -> str | None:
    return request.meta.get("proxy") or request.meta.get(PROXY_SEEN_KEY)


class BrowserProxyRelay:
    """Point a browser context's own proxy at the guard's relay to it (see :mod:`statecrawl.net.proxy`).

    A context created with ``playwright_context_kwargs["proxy"]`` (browser
    sessions bound to ``STATECRAWL_PROXIES``, or a spider's own) would have
    Chromium connect to that proxy directly, past the guard's SOCKS proxy.
    Its ``server`` becomes ``<scheme>://127.0.0.1:<relay port>`` (credentials
    kept: Playwright answers the upstream's challenges through the relay)
    and its bypass list ``<-loopback>`` (an entry would be a direct
    connection). An ``https://`` proxy cannot be relayed (Chromium would check
    the proxy's certificate against 127.0.0.1): such a request is refused.

    It also notes every request's proxy in ``meta["_statecrawl_net_proxy"]``
    (worker-local): the session middleware takes ``meta["proxy"]`` back
    before :class:`NetGuardMiddleware` sees the response or the error.
    """

    def __init__(self, proxy: GuardProxy) -> None:
        self.proxy = proxy

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BrowserProxyRelay:
        proxy = running_proxy()
        if not crawler.settings.getbool(GUARD_SETTING) or proxy is None:
            raise NotConfigured
        return cls(proxy)

    def process_request(self, request: Request) -> None:
        if request.meta.get("proxy"):
            request.meta[PROXY_SEEN_KEY] = request.meta["proxy"]
        else:
            request.meta.pop(PROXY_SEEN_KEY, None)
        kwargs = request.meta.get("playwright_context_kwargs")
        if not request.meta.get("playwright") or not isinstance(kwargs, dict):
            return
        given = kwargs.get("proxy")
        if not given:
            return
        server = str(given.get("server", "") if isinstance(given, dict) else given)
        parts = urlsplit(server if "://" in server else f"http://{server}")
        if parts.scheme not in ("http", "socks5") or not parts.hostname:
            raise AddressRefused(f"refused: the browser context's proxy {parts.scheme}://"
                                 f"{parts.hostname}:{parts.port} cannot be relayed by "
                                 f"{GUARD_SETTING} (http:// and socks5:// proxies can)")
        if (parts.hostname, parts.port) == ("127.0.0.1", self.proxy.port) or server.startswith(
                tuple(f"{parts.scheme}://127.0.0.1:{p}" for p in self.proxy.relay_ports())):
            return  # relayed already (a retry of this request)
        port = parts.port or (1080 if parts.scheme == "socks5" else 80)
        relay = self.proxy.relay_for(parts.hostname, port)
        rewritten = dict(given) if isinstance(given, dict) else {}
        if parts.username and "username" not in rewritten:
            rewritten.update(username=unquote(parts.username), password=unquote(parts.password or ""))
        rewritten.update(server=f"{parts.scheme}://127.0.0.1:{relay}", bypass=BYPASS)
        request.meta["playwright_context_kwargs"] = {**kwargs, "proxy": rewritten}
