"""``statecrawl.items``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.output.items`."""

from __future__ import annotations

from statecrawl.output.items import Page

__all__ = ["Page"]
