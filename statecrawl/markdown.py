"""``statecrawl.markdown``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.content.markdown`."""

from __future__ import annotations

from statecrawl.content.markdown import main_content_html, to_markdown

__all__ = ["main_content_html", "to_markdown"]
