"""robots.txt with the answer given to every request that waited for it.

Scrapy 2.19's ``RobotsTxtMiddleware`` parks the requests that arrive while a
host's robots.txt is being fetched on one shared Deferred, and awaits it with
``maybe_deferred_to_future``, which consumes the Deferred's result: only the
first waiting request gets the parser, the others get ``None`` and are let
through, disallowed or not. A worker that joins a running crawl leases a
whole batch at once, so this bites statecrawl often (a disallowed page was
fetched in the chaos tests). This subclass keeps one asyncio future per host
being fetched, which any number of requests can await. The add-on puts it in
place of Scrapy's middleware, at the same priority.

A request robots.txt forbids makes no item; so that it does not vanish
without a trace, each one is counted crawl-wide (``robots_denied`` in the
crawl's stats, shown by ``statecrawl status``) with the next commit.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.robotstxt import (
    RobotsTxtMiddleware as _ScrapyRobotsTxt,
)
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.httpobj import urlparse_cached

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.robotstxt import RobotParser

__all__ = ["RobotsTxtMiddleware"]


class RobotsTxtMiddleware(_ScrapyRobotsTxt):
    """Scrapy's middleware, with robots.txt shared correctly among waiters."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self._fetching: dict[str, asyncio.Future[RobotParser | None]] = {}
        self._crawler = crawler

    def process_request_2(self, rp: RobotParser | None, request: Request) -> None:
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest:
            from statecrawl.frontier.state import WorkerState

            WorkerState.of(self._crawler).count("robots_denied")
            raise

    async def robot_parser(self, request: Request) -> RobotParser | None:
        netloc = urlparse_cached(request).netloc
        pending = self._fetching.get(netloc)
        if pending is not None:
            return await asyncio.shield(pending)
        if netloc in self._parsers:  # fetched already: Scrapy answers directly
            return await super().robot_parser(request)
        pending = self._fetching[netloc] = asyncio.get_running_loop().create_future()
        try:
            parser = await super().robot_parser(request)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: the waiters re-raise it
            raise
        else:
            pending.set_result(parser)
        finally:
            del self._fetching[netloc]
        return parser
