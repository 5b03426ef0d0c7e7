"""Rule-based spiders for tests (``-s SPIDER_MODULES=tests.rule_spiders``): ``CrawlSpider`` and scrapy-redis'
``RedisCrawlSpider``. Their followed links carry callbacks Scrapy makes itself
(``_callback``, ``_errback``), which must round-trip through Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor
from scrapy.spiders import CrawlSpider, Rule
from scrapy_redis.spiders import RedisCrawlSpider

_RULES = (
    Rule(LinkExtractor(allow=r"/page/\d+\.html$"), callback="parse_page", follow=True),
    Rule(LinkExtractor(allow=r"/orphan\.html$|/missing\.html$"), callback="parse_page",
         errback="page_failed"),
)


class RulesSpider(CrawlSpider):
    name = "rules"
    rules = _RULES

    def __init__(self, url: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [url]
        self.allowed_domains = [urlsplit(url).hostname or ""]

    def parse_page(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "title": response.css("title::text").get(),
               "rule": response.meta.get("rule")}

    def page_failed(self, failure: Any) -> Iterator[dict[str, Any]]:
        yield {"url": failure.request.url, "error": {"type": type(failure.value).__name__,
                                                     "message": str(failure.value)}}


class RedisRulesSpider(RedisCrawlSpider):
    name = "redis_rules"  # start URLs: the list REDIS_START_URLS_KEY names
    rules = _RULES

    def __init__(self, domain: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed_domains = [domain]

    parse_page = RulesSpider.parse_page
    page_failed = RulesSpider.page_failed
