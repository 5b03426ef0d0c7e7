"""``statecrawl.login``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.login`."""

from __future__ import annotations

from statecrawl.sessions.login import LoginMiddleware

__all__ = ["LoginMiddleware"]
