"""``scrapy crawl catalog -a url=URL``: walk a paginated catalog with its cursor in ``spider.state``.

An example of a spider whose progress is a *cursor*, not a set of URLs: the
pages of a listing (``?page=1``, ``?page=2``, ...) are walked one after the
other, each page's products become items, and the page to fetch next lives
in ``self.state["page"]`` -- Scrapy's convention for state kept across runs.
statecrawl checkpoints ``spider.state`` to Redis every
``STATECRAWL_CHECKPOINT_INTERVAL`` seconds (:mod:`statecrawl.sessions.checkpoint`), so
a worker killed at page 400 is replaced by one that starts at the last
checkpoint, not at page 1.

The pages are downloaded here (``engine.download_async``), not scheduled:
the cursor, not the frontier, says what comes next, so nothing else holds
the walk's position. The cursor moves only *after* a page's items are
yielded, so a checkpoint never claims a page whose items are not stored.

Arguments: ``url`` (the listing; ``page`` is set in its query), ``crawl_id``,
``max_pages`` (stop after this many pages, across restarts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from scrapy import Request, Spider
from scrapy.http import TextResponse
from scrapy.http.request import NO_CALLBACK
from w3lib.url import add_or_replace_parameter

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.scope import validate_start_url

__all__ = ["CatalogSpider"]


class CatalogSpider(Spider):
    name = "catalog"

    def __init__(self, url: str | None = None, crawl_id: str | None = None,
                 max_pages: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_url = validate_start_url(url)
        self.crawl_id = crawl_id or self.name
        try:
            self.max_pages = int(max_pages) if max_pages not in (None, "") else None
        except ValueError:
            raise ConfigError(f"-a max_pages= expects a whole number, got {max_pages!r}") from None
        self.crawl_args = {k: v for k, v in {"url": self.start_url,
                                             "max_pages": self.max_pages}.items() if v is not None}
        self.state: dict[str, Any] = {}  # replaced by the checkpointed state at spider open

    async def start(self) -> AsyncIterator[dict[str, Any]]:
        assert self.crawler.engine is not None
        while not self.state.get("done"):
            page = int(self.state.get("page", 1))
            if self.max_pages is not None and page > self.max_pages:
                break
            url = add_or_replace_parameter(self.start_url, "page", str(page))
            response = await self.crawler.engine.download_async(Request(
                url, callback=NO_CALLBACK, dont_filter=True, meta={"handle_httpstatus_all": True}))
            if response.status == 404:
                self.state["done"] = True  # past the last page
                break
            if response.status != 200 or not isinstance(response, TextResponse):
                self.logger.error("catalog page %s answered HTTP %d; stopping at page %d",
                                  url, response.status, page)
                break
            fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for link in response.css("li.product a"):
                yield {"url": response.urljoin(link.attrib["href"]),
                       "name": link.css("::text").get("").strip(), "page": page,
                       "crawl_id": self.crawl_id, "fetched_at": fetched_at}
            # after the items: a checkpoint with page+1 implies page's items are stored
            self.state["page"] = page + 1
            if not response.css("a[rel=next]"):
                self.state["done"] = True
