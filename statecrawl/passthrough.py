"""``statecrawl.passthrough``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.passthrough`."""

from __future__ import annotations

from statecrawl.sessions.passthrough import PassThroughMiddleware

__all__ = ["PassThroughMiddleware"]
