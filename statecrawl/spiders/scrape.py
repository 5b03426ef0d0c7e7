"""``scrapy crawl scrape``: serve single-page scrapes from a service crawl (the API's workers).

The spider of ``statecrawl worker --serve-scrapes``. It has no start URL and
follows no link: its crawl (``-a crawl_id=``, default ``api-scrape``) runs
in service mode (``STATECRAWL_SERVICE``), so its workers wait for requests
that the API enqueues (:mod:`statecrawl.api.scrape`) and never finish.

Each request carries ``meta["statecrawl_service"]`` (the request id the
caller waits on; or ``meta["statecrawl_batch"]``, a page of a batch job whose
result goes into the job, :mod:`statecrawl.api.batch`) and ``meta["statecrawl_scrape"]``: ``formats`` (item
formats: ``markdown``, ``html``, ``raw_html``, ``links``),
``only_main_content`` (bool), ``include_tags`` / ``exclude_tags`` (CSS
selectors), ``sitemap`` (bool: the body is read as a sitemap, below). The page is built as the ``site`` spider builds it
(:func:`statecrawl.spiders.site.fill_page`) and answered as a
:class:`~statecrawl.output.items.Reply` ``{"page": <Page as a dict>}``;
a fetch that failed answers a page whose ``error`` says why. An HTTP error
status is a page like any other (``status`` says it), as in Firecrawl.

With ``sitemap: true`` (what ``POST /map`` asks for) the page has no content
formats: its ``links`` are the URLs the body lists, ``{"url", "text"}`` where
``text`` is ``"sitemap"`` for a sitemap to read next (a sitemap index's
entries, a robots.txt ``Sitemap:`` line) and ``""`` for a page of a
``urlset``. The body may be gzipped (at most :data:`SITEMAP_MAX_BYTES`
unpacked); at most :data:`SITEMAP_MAX_LINKS` are returned. A body that is no
sitemap (an HTML 404 page) has no links.

The spider refuses to start without the net guard (``STATECRAWL_NET_GUARD``,
:mod:`statecrawl.net`): its URLs come from API users, who must not reach
loopback, private or metadata addresses unless ``STATECRAWL_NET_ALLOW``
lets them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from scrapy import Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor
from scrapy.utils.gz import gunzip
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from twisted.python.failure import Failure

from statecrawl.api.batch import BATCH_META_KEY
from statecrawl.api.worker import JobResult
from statecrawl.content.markdown import IMAGES
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.service import SERVICE_META_KEY
from statecrawl.output.items import Page, Reply
from statecrawl.render.middleware import RENDERER_META_KEY
from statecrawl.spiders._args import FORMATS
from statecrawl.spiders.site import fill_page, markdown_images, response_fields

__all__ = ["DEFAULT_CRAWL_ID", "SCRAPE_META_KEY", "SITEMAP_MAX_BYTES", "SITEMAP_MAX_LINKS",
           "ScrapeSpider", "sitemap_links"]

#: The crawl the API enqueues scrapes into unless told otherwise.
DEFAULT_CRAWL_ID = "api-scrape"
#: ``request.meta`` key of a scrape's options (module docstring).
SCRAPE_META_KEY = "statecrawl_scrape"

#: A sitemap's largest unpacked body (the sitemap protocol's own limit is 50 MB).
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
#: The most URLs one sitemap answers (the protocol's limit).
SITEMAP_MAX_LINKS = 50_000


def sitemap_links(body: bytes, url: str) -> list[dict[str, str]]:
    """The URLs a sitemap (XML, maybe gzipped) or a robots.txt body lists (module docstring)."""
    if body[:2] == b"\x1f\x8b":
        try:
            body = gunzip(body, max_size=SITEMAP_MAX_BYTES)
        except (OSError, EOFError, ValueError):
            return []
    head = body.lstrip()[:512].lower()
    links: list[dict[str, str]] = []
    if head.startswith(b"<") and (b"<urlset" in body[:4096] or b"<sitemapindex" in body[:4096]
                                  or head.startswith(b"<?xml")):
        try:
            sitemap = Sitemap(body)
        except Exception:  # noqa: BLE001 - not XML at all: no links
            return []
        if sitemap.type not in ("urlset", "sitemapindex"):
            return []
        text = "sitemap" if sitemap.type == "sitemapindex" else ""
        for entry in sitemap:
            loc = entry.get("loc")
            if isinstance(loc, str) and loc.strip():
                links.append({"url": loc.strip(), "text": text})
            if len(links) >= SITEMAP_MAX_LINKS:
                break
        return links
    if head.startswith(b"<"):
        return []  # HTML: no sitemap here
    return [{"url": u, "text": "sitemap"}
            for u in sitemap_urls_from_robots(body[:SITEMAP_MAX_BYTES], base_url=url)][:SITEMAP_MAX_LINKS]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _selectors(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) and value else None


class ScrapeSpider(Spider):
    name = "scrape"
    custom_settings: dict[str, Any] | None = {
        "STATECRAWL_SERVICE": True,
        "STATECRAWL_STORE_ITEMS": False,  # replies go to their callers, never to `items`
        "FEEDS": {},
        "ROBOTSTXT_OBEY": False,  # a scrape is one page asked for by name, as in Firecrawl
        "HTTPERROR_ALLOW_ALL": True,  # a 404 page is scraped and says 404
        # Scrapy runs this many tasks per response to process its output; a scrape has one
        # item, and the default 100 tasks cost ~17% of a worker's pages/s (bench/api.py)
        "CONCURRENT_ITEMS": 4,
    }

    def __init__(self, crawl_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crawl_id = crawl_id or DEFAULT_CRAWL_ID
        self.markdown_images = IMAGES[0]
        # every link of the page, documents and images included (Firecrawl's links)
        self.link_extractor = LinkExtractor(unique=True, deny_extensions=[])

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ScrapeSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.markdown_images = markdown_images(crawler.settings)
        if not crawler.settings.getbool("STATECRAWL_NET_GUARD"):
            # its URLs come from whoever can reach the API: never to loopback, private or
            # metadata addresses unless the operator allows them (STATECRAWL_NET_ALLOW)
            raise ConfigError("the scrape spider fetches URLs that API users submit: run it with "
                              "STATECRAWL_NET_GUARD=true (statecrawl worker --serve-scrapes does), "
                              "and STATECRAWL_NET_ALLOW for the private hosts it may reach")
        return spider

    async def start(self) -> Any:
        return
        yield  # no start request: the frontier brings the work

    def _reply(self, meta: dict[str, Any], page: Page) -> Iterator[Reply | JobResult]:
        request_id, batch = meta.get(SERVICE_META_KEY), meta.get(BATCH_META_KEY)
        if isinstance(request_id, str):
            yield Reply(request_id, {"page": dataclasses.asdict(page)})
        elif isinstance(batch, dict) and isinstance(batch.get("job"), str):
            yield JobResult(batch["job"], str(batch.get("key", "")), dataclasses.asdict(page),
                            [str(f) for f in batch.get("formats") or ("markdown",)],
                            [str(f) for f in batch.get("unsupported") or ()])

    def parse(self, response: Response) -> Iterator[Reply | JobResult]:
        options = response.meta.get(SCRAPE_META_KEY) or {}
        asked = response.request.url if response.request is not None else response.url
        origin = (response.meta.get("redirect_urls") or [asked])[0]
        page = Page(url=origin, crawl_id=self.crawl_id, fetched_at=_now())
        response_fields(page, response)
        if options.get("sitemap") is True:
            page.links = sitemap_links(response.body, response.url)
            yield from self._reply(response.meta, page)
            return
        formats = [f for f in options.get("formats") or ("markdown",) if f in FORMATS]
        fill_page(page, response, formats=formats, images=self.markdown_images,
                  link_extractor=self.link_extractor,
                  only_main_content=options.get("only_main_content", True) is not False,
                  include_tags=_selectors(options.get("include_tags")),
                  exclude_tags=_selectors(options.get("exclude_tags")),
                  extract_links="links" in formats)
        yield from self._reply(response.meta, page)

    def on_error(self, failure: Failure) -> Iterator[Reply | JobResult]:
        if failure.check(IgnoreRequest):
            return  # its caller is gone, or a filter refused it: nobody to answer
        request = failure.request  # type: ignore[attr-defined]
        origin = (request.meta.get("redirect_urls") or [request.url])[0]
        page = Page(url=origin, crawl_id=self.crawl_id, fetched_at=_now(),
                    renderer=request.meta.get(RENDERER_META_KEY, "http"),
                    error={"type": type(failure.value).__name__,
                           "message": str(failure.value) or repr(failure.value)})
        yield from self._reply(request.meta, page)
