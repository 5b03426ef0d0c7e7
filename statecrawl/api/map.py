"""``POST /v1|v2/map``: a site's URLs from its start page and its sitemap, through scrape workers.

:class:`MapService` runs a map on the scrape workers of the service crawl
(:class:`~statecrawl.api.scrape.ScrapeService`): no other worker kind, no
process per request, nothing stored as a job. Within the request's
``timeout`` (ms, default 30,000) and concurrently:

1. the start URL is scraped (unless ``sitemap`` is ``"only"``): its links,
   and its title and description;
2. unless ``sitemap`` is ``"skip"``, ``<origin>/sitemap.xml`` and
   ``<origin>/robots.txt`` are fetched with the spider's ``sitemap`` option
   (:func:`statecrawl.spiders.scrape.sitemap_links`); sitemaps they name
   (a sitemap index's entries, robots.txt ``Sitemap:`` lines) are read
   next, at most :data:`MAX_SITEMAPS` sitemap fetches in all.

The links are then merged (start URL first, then the page's links, then the
sitemaps' URLs), normalised (:func:`normalize`: fragment dropped, with
``ignoreQueryParameters`` the query too; only ``http``/``https``), kept
when on the start URL's host (``www.`` ignored; with ``includeSubdomains``
also its subdomains), deduplicated, filtered by ``search`` (the URL, or the
start page's title or description, contains it, case-insensitively; the
order is kept, there is no relevance ranking) and cut at ``limit``.

Errors: a start page that failed is the map's answer, as a scrape answers
it (:class:`~statecrawl.api.scrape.ScrapeTimeout` 408,
:class:`~statecrawl.api.scrape.ScrapeFailed` 500); a sitemap that failed or
timed out only adds a ``warning``. With ``sitemap: "only"`` there is no
start page, and a map whose sitemap fetches all timed out is a 408.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from statecrawl.api.models import MapRequest
from statecrawl.api.scrape import DEFAULT_TIMEOUT_MS, ScrapeError, ScrapeService, ScrapeTimeout

__all__ = ["MAX_SITEMAPS", "MapResult", "MapService", "in_scope", "normalize"]

#: The most sitemap documents one map fetches (robots.txt and /sitemap.xml included).
MAX_SITEMAPS = 6


def normalize(url: str, *, ignore_query: bool) -> str | None:
    """*url* without its fragment (and query, with *ignore_query*), host lowercased;
    None unless it is an ``http``/``https`` URL with a host."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    netloc = parts.netloc.rsplit("@", 1)[-1].lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/",
                       "" if ignore_query else parts.query, ""))


def _site(host: str) -> str:
    return host.lower().removeprefix("www.")


def in_scope(url: str, start_host: str, *, subdomains: bool) -> bool:
    """*url* is on *start_host* (``www.`` or not), or a subdomain of it with *subdomains*."""
    host = urlsplit(url).hostname or ""
    site, base = _site(host), _site(start_host)
    return site == base or (subdomains and site.endswith("." + base))


@dataclass
class MapResult:
    """The links, as :func:`statecrawl.api.responses.map_body` takes them, and a warning."""

    links: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        return "; ".join(self.warnings) or None


class MapService:
    """Maps through *scrapes* (module docstring)."""

    def __init__(self, scrapes: ScrapeService) -> None:
        self.scrapes = scrapes

    async def map(self, body: MapRequest) -> MapResult:
        """The map of *body*; raises :class:`~statecrawl.api.scrape.ScrapeError` as a scrape does."""
        timeout_ms = body.timeout or DEFAULT_TIMEOUT_MS
        deadline = time.monotonic() + timeout_ms / 1000
        start = body.url
        page_task = None
        if body.sitemap != "only":
            page_task = asyncio.ensure_future(
                self.scrapes.page(start, {"formats": ["links"]}, timeout_ms))
        sitemap_task = None
        if body.sitemap != "skip":
            sitemap_task = asyncio.ensure_future(self._sitemaps(start, deadline))
        try:
            page: dict[str, Any] | None = None
            if page_task is not None:
                page = await page_task  # its failure is the map's
            found: list[str] = []
            warnings: list[str] = []
            if sitemap_task is not None:
                found, warnings, timed_out = await sitemap_task
                if page_task is None and timed_out and not found:
                    raise ScrapeTimeout(f"Map timed out after {timeout_ms} ms: no sitemap was "
                                        "read in time (are scrape workers running?)")
        finally:
            for task in (page_task, sitemap_task):
                if task is not None and not task.done():
                    task.cancel()
        return MapResult(self._links(body, page, found), warnings)

    def _links(self, body: MapRequest, page: dict[str, Any] | None,
               sitemap_urls: Iterable[str]) -> list[dict[str, Any]]:
        ignore_query = body.ignore_query_parameters
        start_host = urlsplit(body.url).hostname or ""
        start = normalize(body.url, ignore_query=ignore_query)
        candidates: list[tuple[str, dict[str, Any]]] = []
        if page is not None and start is not None:
            candidates.append((body.url, {"title": page.get("title"),
                                          "description": page.get("description")}))
            candidates += [(link["url"], {}) for link in page.get("links") or ()
                           if isinstance(link, dict) and isinstance(link.get("url"), str)]
        candidates += [(url, {}) for url in sitemap_urls]
        term = (body.search or "").strip().lower()
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for raw, extra in candidates:
            url = normalize(raw, ignore_query=ignore_query)
            if url is None or url in seen:
                continue
            if not in_scope(url, start_host, subdomains=body.include_subdomains):
                continue
            seen.add(url)
            item = {"url": url, **{k: v for k, v in extra.items() if isinstance(v, str) and v}}
            if term and not any(term in str(v).lower() for v in item.values()):
                continue
            out.append(item)
            if len(out) >= body.limit:
                break
        return out

    async def _sitemaps(self, start: str, deadline: float) -> tuple[list[str], list[str], bool]:
        """(page URLs, warnings, whether any fetch timed out) of the site's sitemaps."""
        parts = urlsplit(start)
        origin = f"{parts.scheme}://{parts.netloc}"
        queue = [origin + "/sitemap.xml", origin + "/robots.txt"]
        guessed = set(queue)
        fetched: set[str] = set()
        urls: list[str] = []
        warnings: list[str] = []
        timed_out = False
        while queue and len(fetched) < MAX_SITEMAPS:
            batch = []
            for url in queue:
                if url not in fetched and len(fetched) < MAX_SITEMAPS:
                    fetched.add(url)
                    batch.append(url)
            queue = []
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not batch:
                break
            results = await asyncio.gather(
                *(self.scrapes.page(url, {"sitemap": True}, left_ms) for url in batch),
                return_exceptions=True)
            for url, result in zip(batch, results):
                if isinstance(result, ScrapeTimeout):
                    timed_out = True
                    warnings.append(f"sitemap {url} timed out")
                elif isinstance(result, ScrapeError):
                    warnings.append(f"sitemap {url} failed: {result}")
                elif isinstance(result, BaseException):
                    raise result
                else:
                    status = int(result.get("status") or 0)
                    if status >= 400:
                        if url not in guessed:  # a missing /sitemap.xml or robots.txt is no news
                            warnings.append(f"sitemap {url} answered {status}")
                        continue
                    for link in result.get("links") or ():
                        if link.get("text") == "sitemap":
                            queue.append(link["url"])
                        else:
                            urls.append(link["url"])
        return urls, warnings, timed_out
