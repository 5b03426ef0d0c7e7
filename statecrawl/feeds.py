"""``statecrawl.feeds``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.output.feeds`."""

from __future__ import annotations

from statecrawl.output.feeds import uri_params

__all__ = ["uri_params"]
