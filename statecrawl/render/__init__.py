"""Rendering: which pages go to Chromium, and the handler that renders them.

* ``middleware`` (``RenderMiddleware``: ``http``, ``browser`` or ``auto`` per
  request, and the meta keys that say so);
* ``browser`` (``BrowserHandler``: scrapy-playwright's handler, bounded);
* ``detect`` (does a page look script-built?).

The names below are the middleware's, re-exported so that
``statecrawl.render.RenderMiddleware`` and its constants keep their path.
"""

from __future__ import annotations

from statecrawl.render.middleware import (
    RENDER_META_KEY,
    RENDER_MODES,
    RENDER_OPTIONS_META_KEY,
    RENDERER_META_KEY,
    WAIT_UNTIL,
    RenderMiddleware,
)

__all__ = [
    "RENDERER_META_KEY", "RENDER_META_KEY", "RENDER_MODES", "RENDER_OPTIONS_META_KEY", "WAIT_UNTIL",
    "RenderMiddleware",
]
