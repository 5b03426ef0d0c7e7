"""The guarded resolver: the IP-level check at connect time, in Scrapy's ``TWISTED_DNS_RESOLVER``.

Why a resolver, and why this one
--------------------------------
Scrapy's HTTP download handler (``HTTP11DownloadHandler``, which
scrapy-playwright's handler falls back to for every request not rendered in
the browser) connects through Twisted's ``Agent``, which builds a
``HostnameEndpoint`` for each new connection. ``HostnameEndpoint.connect``
asks the reactor's *name resolver* (``reactor.nameResolver``, an
``IHostnameResolver``) for the addresses of the URL's host -- for an IP
literal as much as for a name: it never short-cuts ``127.0.0.1`` or
``[::1]`` -- and then connects to exactly the addresses the resolver handed
it, nothing else. A resolver that withholds refused addresses therefore
decides what the crawler connects to, for every request: start URLs,
followed links, redirects (a redirect is a new request, a new connection),
retries, and names whose DNS answer changes between lookups (rebinding):
the answer that is checked is the answer that is connected to, because there
is no second lookup. A check in a downloader middleware, before the
download, would resolve on its own and could be given another answer than
the connection gets a moment later.

:class:`GuardedResolver` subclasses Scrapy's
``scrapy.resolver.CachingHostnameResolver`` (the ``IHostnameResolver`` one,
installed with ``installNameResolver``), not Scrapy's default
``CachingThreadedResolver``: that one is an ``IResolverSimple`` returning a
single IPv4 address, which Twisted wraps, so it neither sees every address a
name has nor handles IPv6. Scrapy's DNS cache is kept (``DNSCACHE_ENABLED``,
``DNSCACHE_SIZE``): cached answers are checked on each use, like fresh ones.
What changes with it: IPv6 addresses are used (both families are resolved,
Twisted tries them in turn), and ``DNS_TIMEOUT`` no longer applies
(``getaddrinfo`` runs in the reactor's thread pool without a timeout).

A refused answer reaches ``HostnameEndpoint`` as *no addresses*: no
connection is attempted (an IP literal is judged at once, without a thread
or a DNS query), and Twisted fails the connection with ``DNSLookupError``.
The resolver remembers why (:meth:`GuardedResolver.refusal_for`);
:class:`statecrawl.net.middleware.NetGuardMiddleware` turns that error into
:class:`~statecrawl.exceptions.AddressRefused` with the reason, before
Scrapy's ``RetryMiddleware`` would retry a DNS error.

What it does not cover
----------------------
* Requests sent through an HTTP(S) proxy (``meta["proxy"]``, ``http_proxy``
  in the environment, ``STATECRAWL_PROXIES``): the crawler connects to the
  proxy, which is checked like any host (allow-list a proxy on a private
  network), and the *proxy* resolves and connects to the target. Guarding
  the target is then the proxy's job.
* Pages rendered in Chromium (scrapy-playwright, ``STATECRAWL_RENDER`` =
  ``browser`` or ``auto``): Chromium connects through the guard's own
  SOCKS5 proxy instead, which checks the same way
  (:mod:`statecrawl.net.proxy`).
* Download handlers that do not connect through Twisted (Scrapy's
  ``httpx`` / ``aiohttp`` handlers, a reactorless Scrapy).

The resolver is the process's: Scrapy installs it on the reactor once
(``CrawlerProcess``, built from the *process* settings, not a spider's
``custom_settings``); :func:`use_guarded_resolver` chooses it from the
add-on's ``update_pre_crawler_settings``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.resolver import CachingHostnameResolver, CachingThreadedResolver, HostResolution
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.settings import default_settings as scrapy_defaults
from scrapy.utils.datatypes import LocalCache
from scrapy.utils.misc import load_object
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer

from statecrawl.exceptions import ConfigError
from statecrawl.net.addresses import Allowlist, Refusal, judge, normalize_host, parse_ip

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scrapy.settings import BaseSettings
    from twisted.internet.interfaces import IAddress, IHostResolution

__all__ = ["GUARD_SETTING", "GuardedResolver", "RESOLVER_PATH", "use_guarded_resolver"]

logger = logging.getLogger(__name__)

#: The switch (bool, default False). The allowlist is ``STATECRAWL_NET_ALLOW``.
GUARD_SETTING = "STATECRAWL_NET_GUARD"
RESOLVER_PATH = "statecrawl.net.GuardedResolver"
#: Scrapy's own resolvers, which the guard replaces without asking.
_SCRAPY_RESOLVERS = (CachingThreadedResolver, CachingHostnameResolver)
#: Scrapy 2.14+ reads the resolver from TWISTED_DNS_RESOLVER (DNS_RESOLVER is deprecated).
_RESOLVER_SETTINGS = (("TWISTED_DNS_RESOLVER", "DNS_RESOLVER")
                      if hasattr(scrapy_defaults, "TWISTED_DNS_RESOLVER") else ("DNS_RESOLVER",))


@implementer(IHostnameResolver)
class GuardedResolver(CachingHostnameResolver):
    """Resolve like Scrapy's ``CachingHostnameResolver``; hand back no address if one is refused.

    An answer is refused when any of its addresses is refused by
    :func:`statecrawl.net.addresses.refused_reason` and neither the host
    name nor a network holding that address is in the allowlist.
    """

    def __init__(self, reactor: Any, cache_size: int, allow: Allowlist) -> None:
        super().__init__(reactor, cache_size)
        self.cache_size = cache_size
        self.allow = allow
        # host -> why its last failed resolution gave no address (None: DNS had none)
        self._failures: LocalCache[str, Refusal | None] = LocalCache(4096)

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> GuardedResolver:
        # Scrapy passes its CrawlerProcess here: these are the process's settings.
        settings = crawler.settings
        cache_size = settings.getint("DNSCACHE_SIZE") if settings.getbool("DNSCACHE_ENABLED") else 0
        return cls(reactor, cache_size, Allowlist.from_settings(settings))

    def resolveHostName(  # noqa: N802 - Twisted's interface
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,  # noqa: N803
        portNumber: int = 0,  # noqa: N803
        addressTypes: Sequence[type[IAddress]] | None = None,  # noqa: N803
        transportSemantics: str = "TCP",  # noqa: N803
    ) -> IHostResolution:
        literal = parse_ip(hostName)
        if literal is not None:
            # judged here, at once: no thread, no DNS query, no connection
            refusal = self.checked(hostName, [str(literal)])
            if refusal is not None:
                resolution = HostResolution(hostName)
                resolutionReceiver.resolutionBegan(resolution)
                resolutionReceiver.resolutionComplete()
                return resolution
            hostName = str(literal)  # noqa: N806 - Twisted's Agent passes "[::1]" with its brackets
        checked = _CheckedReceiver(self, resolutionReceiver, hostName)
        if not self.cache_size:
            return self.original_resolver.resolveHostName(
                checked, hostName, portNumber, addressTypes, transportSemantics)
        return super().resolveHostName(checked, hostName, portNumber, addressTypes, transportSemantics)

    def checked(self, host: str, addresses: list[str]) -> Refusal | None:
        """Judge one answer for *host*; remember why it failed, if it gave no usable address."""
        refusal = judge(host, addresses, self.allow)
        if refusal is not None:
            logger.debug("%s", refusal)
        if refusal is not None or not addresses:
            self._failures[normalize_host(host)] = refusal
        return refusal

    def refusal_for(self, host: str) -> Refusal | None:
        """Why the last resolution of *host* that gave no address gave none (None: DNS had none)."""
        return self._failures.get(normalize_host(host))


@implementer(IResolutionReceiver)
class _CheckedReceiver:
    """Holds the addresses back until the answer is complete, then passes on all or none."""

    def __init__(self, resolver: GuardedResolver, receiver: IResolutionReceiver, host: str) -> None:
        self.resolver = resolver
        self.receiver = receiver
        self.host = host
        self.addresses: list[IAddress] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:  # noqa: N802, N803
        self.receiver.resolutionBegan(resolutionInProgress)

    def addressResolved(self, address: IAddress) -> None:  # noqa: N802
        self.addresses.append(address)

    def resolutionComplete(self) -> None:  # noqa: N802
        texts = [str(getattr(a, "host", a)) for a in self.addresses]
        if self.resolver.checked(self.host, texts) is None:
            for address in self.addresses:
                self.receiver.addressResolved(address)
        self.receiver.resolutionComplete()


def use_guarded_resolver(settings: BaseSettings) -> None:
    """With ``STATECRAWL_NET_GUARD`` on, make :class:`GuardedResolver` the process's resolver.

    Called from the add-on's ``update_pre_crawler_settings`` (the settings
    ``CrawlerProcess`` installs the resolver from). Checks the allowlist now,
    so a bad entry stops the process before it crawls. Scrapy's own resolvers
    are replaced, a subclass of :class:`GuardedResolver` is kept; any other
    resolver a project set is refused with a ConfigError: dropping it silently
    could break its DNS, keeping it would leave the crawl unguarded.
    """
    if not settings.getbool(GUARD_SETTING):
        return
    Allowlist.from_settings(settings)
    chosen, priority = RESOLVER_PATH, SETTINGS_PRIORITIES["addon"]
    for name in _RESOLVER_SETTINGS:
        set_at = settings.getpriority(name) or 0
        if set_at <= SETTINGS_PRIORITIES["default"]:
            continue
        value = settings[name]
        resolver = load_object(value) if isinstance(value, str) else value
        if isinstance(resolver, type) and issubclass(resolver, GuardedResolver):
            chosen = value
        elif resolver not in _SCRAPY_RESOLVERS:
            raise ConfigError(
                f"{GUARD_SETTING} installs its own DNS resolver ({RESOLVER_PATH}), but {name} is "
                f"set to {value!r}: remove {name}, or make that resolver a subclass of "
                f"{RESOLVER_PATH}")
        # above the project's value, and strictly above a deprecated DNS_RESOLVER (Scrapy
        # prefers DNS_RESOLVER on a tie)
        priority = max(priority, set_at + 1)
    settings.set(_RESOLVER_SETTINGS[0], chosen, priority)
