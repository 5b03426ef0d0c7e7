"""``statecrawl.cookies``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.cookies`."""

from __future__ import annotations

from statecrawl.sessions.cookies import RedisCookiesMiddleware

__all__ = ["RedisCookiesMiddleware"]
