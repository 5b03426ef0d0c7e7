"""``statecrawl.robots``, a stable path for Scrapy settings: the code is in
:mod:`statecrawl.frontier.robots`."""

from __future__ import annotations

from statecrawl.frontier.robots import RobotsTxtMiddleware

__all__ = ["RobotsTxtMiddleware"]
