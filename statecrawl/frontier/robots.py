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
import logging
import time
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.robotstxt import (
    RobotsTxtMiddleware as _ScrapyRobotsTxt,
)
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.httpobj import urlparse_cached

from statecrawl.frontier.politeness import hosts_of
from statecrawl.frontier.state import RETRY_ERRORS

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.robotstxt import RobotParser

__all__ = ["RobotsTxtMiddleware"]

logger = logging.getLogger(__name__)


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
            await self._crawl_delay(request, parser)  # before any waiter goes on
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: the waiters re-raise it
            raise
        else:
            pending.set_result(parser)
        finally:
            del self._fetching[netloc]
        return parser

    async def _crawl_delay(self, request: Request, parser: RobotParser | None) -> None:
        """A polite crawl honours robots.txt's Crawl-delay, for the whole fleet."""
        rp = getattr(parser, "rp", None)  # Protego, Scrapy's default parser
        hosts = hosts_of(self._crawler)
        if rp is None or hosts.store is None or not hosts.polite:
            return
        agent = self._robotstxt_useragent or request.headers.get(b"User-Agent",
                                                                 self._default_useragent)
        try:
            delay = rp.crawl_delay(agent.decode() if isinstance(agent, bytes) else agent)
        except Exception:  # noqa: BLE001 - another parser's API; the delay is optional
            return
        if delay:
            host = urlparse_cached(request).hostname or ""
            try:
                await hosts.store.crawl_delay(host, float(delay))
            except RETRY_ERRORS as exc:
                logger.warning("statecrawl: could not record %s's Crawl-delay (%s)", host, exc)
            else:
                hosts.rules_changed[host] = time.time()
                logger.info("statecrawl: robots.txt of %s asks for Crawl-delay %ss: the fleet "
                            "keeps it", host, delay)
