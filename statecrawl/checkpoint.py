"""``statecrawl.checkpoint``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.sessions.checkpoint`."""

from __future__ import annotations

from statecrawl.sessions.checkpoint import SpiderStateCheckpoint

__all__ = ["SpiderStateCheckpoint"]
