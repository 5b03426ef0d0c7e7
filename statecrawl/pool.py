"""``statecrawl.pool``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.pool`."""

from __future__ import annotations

from statecrawl.sessions.pool import SessionMiddleware

__all__ = ["SessionMiddleware"]
