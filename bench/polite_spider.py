"""The spider of ``bench/politeness.py``: crawl several small sites, each within its host.

Start URLs: one per line of the file ``BENCH_URLS``. Every same-host link is
followed; nothing is yielded, so what is measured is the rate each server
sees. Under statecrawl (``-s ADDONS={"statecrawl.Addon": 0}``) all processes
share one crawl (``BENCH_CRAWL_ID``); under plain Scrapy each process crawls
on its own, as N copies of a Scrapy project do.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

from scrapy import Request, Spider
from scrapy.http import Response, TextResponse


class PoliteSpider(Spider):
    name = "polite"
    crawl_id = os.environ.get("BENCH_CRAWL_ID", "polite")
    custom_settings = {"LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
                       "ROBOTSTXT_OBEY": False, "CONCURRENT_REQUESTS": 16}

    async def start(self) -> AsyncIterator[Request]:
        with open(os.environ["BENCH_URLS"]) as f:
            for url in f.read().split():
                yield Request(url)

    def parse(self, response: Response) -> Iterator[Request]:
        if not isinstance(response, TextResponse):
            return
        host = urlsplit(response.url).netloc
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if urlsplit(url).netloc == host:
                yield Request(url)
