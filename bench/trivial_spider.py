"""The trivial link-following spider every throughput setup runs.

It follows every same-host ``<a href>`` and yields nothing else, so what is
measured is the crawl machinery (scheduler, dupefilter, engine), not parsing.
At close it appends one JSON line to ``BENCH_RESULT``: responses and the
seconds and the process's CPU seconds (all threads) from the first response
to close (process start-up excluded).
"""

from __future__ import annotations

import gc
import json
import os
import time
from urllib.parse import urlsplit

from scrapy import Request, Spider, signals
from scrapy.http import TextResponse


class TrivialSpider(Spider):
    name = "trivial"
    crawl_id = os.environ.get("BENCH_CRAWL_ID", "trivial")
    custom_settings = {"LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
                       "ROBOTSTXT_OBEY": False, "CONCURRENT_REQUESTS": 16}

    def __init__(self, url: str = "", gc_freeze: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.gc_freeze = gc_freeze == "1"  # -a gc_freeze=1: what statecrawl's workers do
        self.start_url = url
        self.host = urlsplit(url).netloc
        self.first: float | None = None
        self.first_cpu = 0.0
        self.last = 0.0
        self.responses = 0

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):  # type: ignore[no-untyped-def]
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.closed_signal, signal=signals.spider_closed)
        if spider.gc_freeze:
            crawler.signals.connect(spider.freeze, signal=signals.engine_started)
        return spider

    def freeze(self) -> None:
        """Plain Scrapy given statecrawl's ``STATECRAWL_GC_FREEZE`` (the fair comparison).

        The same two calls as ``statecrawl.frontier.state.freeze_startup_heap``, not an
        import of it: that would load statecrawl into plain Scrapy's heap and skew the bench.
        """
        gc.collect()
        gc.freeze()

    async def start(self):  # type: ignore[no-untyped-def]
        yield Request(self.start_url)

    def parse(self, response):  # type: ignore[no-untyped-def]
        if self.first is None:
            self.first = time.monotonic()
            self.first_cpu = time.process_time()
        self.responses += 1
        self.last = time.monotonic()
        if not isinstance(response, TextResponse):
            return
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if urlsplit(url).netloc == self.host:
                yield Request(url)

    def closed_signal(self, spider, reason):  # type: ignore[no-untyped-def]
        elapsed = time.monotonic() - (self.first or time.monotonic())
        cpu = time.process_time() - self.first_cpu
        with open(os.environ["BENCH_RESULT"], "a") as f:
            f.write(json.dumps({"responses": self.responses, "seconds": elapsed, "cpu": cpu,
                                "tail": time.monotonic() - (self.last or time.monotonic()),
                                "reason": reason, "pid": os.getpid(),
                                "end": time.time()}) + "\n")
