"""``statecrawl.browser``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.render.browser`."""

from __future__ import annotations

from statecrawl.render.browser import (
    BrowserHandler,
    block_heavy_resources,
    launch_options,
)

__all__ = ["BrowserHandler", "block_heavy_resources", "launch_options"]
