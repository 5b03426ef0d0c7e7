"""The network guard: what addresses a crawl may connect to (SSRF protection).

Nothing a user submits -- a start URL, a link, a redirect -- may make the
crawler connect to loopback, private, link-local (cloud metadata), shared
(CGNAT) or reserved addresses, unless the operator allowed it. The check is
at connect time, on the very addresses the connection uses, so redirects and
names whose DNS answer changes (rebinding) are covered. Off by default
(``STATECRAWL_NET_GUARD``), so a crawl of one's own local site keeps working.

* ``addresses``: the policy (:func:`refused_reason`) and the operator's
  :class:`Allowlist` (``STATECRAWL_NET_ALLOW``);
* ``resolver``: :class:`GuardedResolver`, Scrapy's ``TWISTED_DNS_RESOLVER``,
  where the check happens, and what it does not cover (proxies, the
  browser);
* ``proxy``: :class:`GuardProxy`, the local SOCKS5 proxy Chromium is
  launched behind (:func:`use_guarded_browser`), where the browser's
  connections are checked, subresources, redirects and WebSockets included;
* ``middleware``: :class:`NetGuardMiddleware`, which reports a refusal as
  :class:`~statecrawl.exceptions.AddressRefused` (not retried) and fails
  closed if the resolver or the browser's proxy is missing, and
  :class:`BrowserProxyRelay`, which routes a browser context's own proxy
  through the guard.

The add-on wires them all when the guard is on. Imports nothing from the
other subpackages but the frontier.
"""

from __future__ import annotations

from statecrawl.net.addresses import ALLOW_SETTING, Allowlist, Refusal, judge, parse_ip, refused_reason
from statecrawl.net.middleware import (
    MIDDLEWARE_PRIORITY,
    RELAY_PRIORITY,
    BrowserProxyRelay,
    NetGuardMiddleware,
)
from statecrawl.net.proxy import GuardProxy, use_guarded_browser
from statecrawl.net.resolver import GUARD_SETTING, GuardedResolver, use_guarded_resolver

__all__ = [
    "ALLOW_SETTING", "GUARD_SETTING", "MIDDLEWARE_PRIORITY", "RELAY_PRIORITY", "Allowlist",
    "BrowserProxyRelay", "GuardProxy", "GuardedResolver", "NetGuardMiddleware", "Refusal", "judge",
    "parse_ip", "refused_reason", "use_guarded_browser", "use_guarded_resolver",
]
