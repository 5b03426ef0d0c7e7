"""``statecrawl.dupefilter``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.frontier.dupefilter`."""

from __future__ import annotations

from statecrawl.frontier.dupefilter import RedisDupeFilter

__all__ = ["RedisDupeFilter"]
