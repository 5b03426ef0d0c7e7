"""``statecrawl.browser_state``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.browser_state`."""

from __future__ import annotations

from statecrawl.sessions.browser_state import BrowserSessionMiddleware

__all__ = ["BrowserSessionMiddleware"]
