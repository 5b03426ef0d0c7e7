"""``POST /v1|v2/scrape``: one page, scraped by a long-running worker, answered as it comes.

:class:`ScrapeService` turns a :class:`~statecrawl.api.models.ScrapeRequest`
into one request of the scrape service crawl (``api-scrape`` by default; its
workers are ``statecrawl worker --serve-scrapes``, i.e. ``scrapy crawl
scrape``) and waits for the worker's reply through Redis
(:class:`statecrawl.frontier.service.ServiceClient`: a ticket, the frontier,
``BLPOP`` on a reply list, each bounded by the request's ``timeout``). No
process is started per request, and the wait never outlasts the timeout:
with no worker running, the answer is a 408 after ``timeout`` ms.

``headers`` go in the request's ticket only (a Fernet token with
``STATECRAWL_SECRET_KEY``, else plain JSON), never into the frontier, a job
record or a document; the ticket is deleted as soon as the reply is in, and
expires with the timeout otherwise.

The worker replies with the page item (:class:`statecrawl.output.items.Page`
as a dict); the document is built here (:func:`~statecrawl.api.responses.document_from_page`),
so one module shapes every document the API returns. Errors, as Firecrawl
answers them: no reply in time -> :class:`ScrapeTimeout` (408
``SCRAPE_TIMEOUT``); the page could not be fetched at all (DNS, connection,
download timeout) -> :class:`ScrapeFailed` (500 ``SCRAPE_FAILED``). A page
that answered with an HTTP error is a document like any other
(``metadata.statusCode`` says it), as in Firecrawl.
"""

from __future__ import annotations

import json
import os
from typing import Any

from redis.asyncio import Redis

from statecrawl.api.models import ScrapeOptions, ScrapeRequest
from statecrawl.api.responses import document_from_page
from statecrawl.frontier.serialize import loads
from statecrawl.frontier.service import (
    SERVICE_META_KEY, ServiceClient, new_request_id, service_request,
)
from statecrawl.sessions.crypto import Sealer

__all__ = [
    "DEFAULT_SCRAPE_CRAWL", "DEFAULT_TIMEOUT_MS", "SCRAPE_META_KEY", "SCRAPE_SPIDER", "ScrapeError",
    "ScrapeFailed", "ScrapeService", "ScrapeTimeout", "item_options", "scrape_crawl_id",
    "unsupported_formats",
]

#: The service crawl scrapes go to (``STATECRAWL_API_SCRAPE_CRAWL`` overrides it).
DEFAULT_SCRAPE_CRAWL = "api-scrape"
#: A scrape's ``timeout`` when the request names none (Firecrawl's default).
DEFAULT_TIMEOUT_MS = 30_000
#: What the worker's spider is called and reads (``statecrawl.spiders.scrape``; the API
#: imports no spider, a test checks both sides agree).
SCRAPE_SPIDER, SCRAPE_META_KEY = "scrape", "statecrawl_scrape"
_CALLBACK, _ERRBACK = "parse", "on_error"
#: API format -> item format (the worker's ``formats``).
_ITEM_FORMATS = {"markdown": "markdown", "html": "html", "rawHtml": "raw_html", "links": "links"}
#: Formats the API lists but scrape workers do not produce yet (no browser rendering here).
_NOT_HERE = ("screenshot",)


def item_options(options: ScrapeOptions) -> dict[str, Any]:
    """A scrape's options as the workers' spiders take them: item formats, main content, tags."""
    return {
        "formats": [_ITEM_FORMATS[f] for f in options.format_names if f in _ITEM_FORMATS],
        "only_main_content": options.only_main_content,
        "include_tags": options.include_tags, "exclude_tags": options.exclude_tags,
    }


def unsupported_formats(options: ScrapeOptions) -> list[str]:
    """Formats asked for that no document will have (they become its warning)."""
    return [*options.unsupported_formats, *(f for f in options.format_names if f in _NOT_HERE)]


def scrape_crawl_id(value: str | None = None) -> str:
    """The scrape crawl id: *value*, else ``STATECRAWL_API_SCRAPE_CRAWL``, else ``api-scrape``."""
    return value or os.environ.get("STATECRAWL_API_SCRAPE_CRAWL") or DEFAULT_SCRAPE_CRAWL


class ScrapeError(Exception):
    """A scrape that has no document; ``status`` and ``code`` are the API's answer."""

    status, code = 500, "SCRAPE_FAILED"


class ScrapeTimeout(ScrapeError):
    status, code = 408, "SCRAPE_TIMEOUT"


class ScrapeFailed(ScrapeError):
    pass


class ScrapeService:
    """Scrapes through the service crawl *crawl_id* (module docstring). No I/O until used."""

    def __init__(self, client: Redis, crawl_id: str | None = None, *,
                 sealer: Sealer | None = None) -> None:
        self.service = ServiceClient(client, scrape_crawl_id(crawl_id), spider=SCRAPE_SPIDER)
        self.sealer = sealer if sealer is not None else Sealer.from_settings({})

    @property
    def crawl_id(self) -> str:
        return self.service.store.crawl_id

    def _request(self, request_id: str, url: str, options: dict[str, Any]) -> bytes:
        meta = {SERVICE_META_KEY: request_id,
                SCRAPE_META_KEY: {k: v for k, v in options.items() if v is not None}}
        return service_request(url, callback=_CALLBACK, errback=_ERRBACK, meta=meta)

    async def page(self, url: str, options: dict[str, Any], timeout_ms: int, *,
                   request_id: str | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The worker's page item (a dict) for *url* with the spider *options*
        (:mod:`statecrawl.spiders.scrape`); raises :class:`ScrapeTimeout` when no reply
        comes within *timeout_ms*, :class:`ScrapeFailed` when the page could not be fetched."""
        request_id = request_id or new_request_id()
        secret = b""
        if headers:
            secret = self.sealer.seal(json.dumps({"headers": headers}).encode())
        reply = await self.service.call(request_id, self._request(request_id, url, options), secret,
                                        timeout_ms / 1000)
        if reply is None:
            raise ScrapeTimeout(f"Scrape timed out after {timeout_ms} ms: no scrape worker "
                                "answered in time (are workers running? statecrawl worker "
                                "--serve-scrapes)")
        data = loads(reply, "scrape reply")
        page = data.get("page") if isinstance(data, dict) else None
        if not isinstance(page, dict) or not isinstance(page.get("url"), str):
            raise ScrapeFailed(f"the scrape worker's reply is not a page: {str(data)[:200]}")
        error = page.get("error")
        if page.get("status") is None and isinstance(error, dict):
            raise ScrapeFailed(f"{error.get('type', 'Error')}: {error.get('message', '')}"[:1000])
        return page

    async def scrape(self, body: ScrapeRequest) -> dict[str, Any]:
        """The document of *body*'s page; raises :class:`ScrapeTimeout` or :class:`ScrapeFailed`."""
        timeout_ms = body.timeout or DEFAULT_TIMEOUT_MS
        request_id = new_request_id()
        page = await self.page(body.url, item_options(body), timeout_ms, request_id=request_id,
                               headers=body.headers)
        return document_from_page(page, body.format_names, scrape_id=request_id,
                                  unsupported=unsupported_formats(body))

    async def close(self) -> None:
        await self.service.close()
