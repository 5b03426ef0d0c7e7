"""Plain Scrapy's side of ``bench/api.py``'s scrape throughput: fetch a URL list, convert each page.

One request per line of the file ``BENCH_URLS``, ``to_markdown`` on every
response (what a scrape worker does for ``formats: ["markdown"]``), the
item dropped (no pipelines, no feeds). Concurrency: ``BENCH_CONCURRENCY``
(``CONCURRENT_REQUESTS`` and per domain, default 32). At close it appends one JSON line
to ``BENCH_RESULT``: pages converted, failures, and the seconds and CPU
seconds (all threads) from the spider's start to its last page, so process
start-up and shutdown are left out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.http import Response, TextResponse
from twisted.python.failure import Failure

from statecrawl.content.markdown import to_markdown


class ListSpider(Spider):
    name = "list"
    custom_settings = {"LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
                       "ROBOTSTXT_OBEY": False, "RETRY_ENABLED": False}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with open(os.environ["BENCH_URLS"]) as f:
            self.urls = f.read().split()
        self.started = self.started_cpu = self.last = self.last_cpu = 0.0
        self.pages = self.failures = 0

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        concurrency = int(os.environ.get("BENCH_CONCURRENCY", "32"))
        settings.set("CONCURRENT_REQUESTS", concurrency, priority="spider")
        settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", concurrency, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ListSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.closed_signal, signal=signals.spider_closed)
        return spider

    async def start(self) -> AsyncIterator[Request]:
        self.started, self.started_cpu = time.monotonic(), time.process_time()
        for url in self.urls:
            yield Request(url, errback=self.on_error, dont_filter=True)

    def parse(self, response: Response) -> Any:
        if isinstance(response, TextResponse):
            markdown = to_markdown(response.text, response.url)
            self.pages += 1
            yield {"url": response.url, "markdown": markdown}
        else:
            self.failures += 1
        self.last, self.last_cpu = time.monotonic(), time.process_time()

    def on_error(self, failure: Failure) -> None:
        self.failures += 1
        self.last, self.last_cpu = time.monotonic(), time.process_time()

    def closed_signal(self, spider: Spider, reason: str) -> None:
        with open(os.environ["BENCH_RESULT"], "a") as f:
            f.write(json.dumps({"pages": self.pages, "failures": self.failures,
                                "seconds": self.last - self.started,
                                "cpu": self.last_cpu - self.started_cpu, "reason": reason}) + "\n")
