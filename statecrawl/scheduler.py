"""``statecrawl.scheduler``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.frontier.scheduler`."""

from __future__ import annotations

from statecrawl.frontier.scheduler import LEASE_META_KEY, Scheduler

__all__ = ["LEASE_META_KEY", "Scheduler"]
