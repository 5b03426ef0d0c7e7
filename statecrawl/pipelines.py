"""``statecrawl.pipelines``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.output.pipelines`."""

from __future__ import annotations

from statecrawl.output.pipelines import MarkdownFiles, RedisItemStore

__all__ = ["MarkdownFiles", "RedisItemStore"]
