"""The v1 request bodies, read into the v2 models, and the table of every endpoint's body.

v1 names are mapped on the way in, so everything past parsing sees v2 only:

==========================  ==========================================================
v1 field                    v2 meaning
==========================  ==========================================================
``maxDepth``                ``maxDiscoveryDepth`` (when that is not given too). v1's
                            Firecrawl meant URL path depth; statecrawl counts link hops
``allowBackwardLinks``      ``crawlEntireDomain`` (when that is not given too)
``ignoreSitemap: true``     ``sitemap: "skip"`` (crawl, map)
``sitemapOnly: true``       ``sitemap: "only"`` (map; wins over ``ignoreSitemap``)
``ignoreInvalidURLs``       same name; the v1 default is false (a bad URL is a 400)
==========================  ==========================================================

An explicit v2 name in a v1 body wins over its v1 counterpart. :meth:`Body.stored`
of a v1 body holds only v2 names.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from statecrawl.api.models import (
    BatchScrapeRequest, Body, CrawlRequest, Int, MapRequest, ScrapeRequest,
)

__all__ = [
    "REQUESTS", "V1BatchScrapeRequest", "V1CrawlRequest", "V1MapRequest", "parse_request",
]


class V1CrawlRequest(CrawlRequest):
    """POST /v1/crawl."""

    _unstored: ClassVar[frozenset[str]] = frozenset({"headers", "max_depth", "allow_backward_links",
                                                     "ignore_sitemap"})

    max_depth: Int | None = Field(default=None, ge=0)
    allow_backward_links: bool | None = None
    ignore_sitemap: bool | None = None

    @model_validator(mode="after")
    def _to_v2(self) -> V1CrawlRequest:
        given = self.model_fields_set
        if self.max_depth is not None and "max_discovery_depth" not in given:
            self.max_discovery_depth = self.max_depth
        if self.allow_backward_links is not None and "crawl_entire_domain" not in given:
            self.crawl_entire_domain = self.allow_backward_links
        if self.ignore_sitemap is not None and "sitemap" not in given:
            self.sitemap = "skip" if self.ignore_sitemap else "include"
        return self


class V1MapRequest(MapRequest):
    """POST /v1/map."""

    _unstored: ClassVar[frozenset[str]] = frozenset({"headers", "ignore_sitemap", "sitemap_only"})

    ignore_sitemap: bool | None = None
    sitemap_only: bool | None = None

    @model_validator(mode="after")
    def _to_v2(self) -> V1MapRequest:
        if "sitemap" not in self.model_fields_set:
            if self.sitemap_only:
                self.sitemap = "only"
            elif self.ignore_sitemap:
                self.sitemap = "skip"
        return self


class V1BatchScrapeRequest(BatchScrapeRequest):
    """POST /v1/batch/scrape: as v2, but a bad URL is a 400 unless ``ignoreInvalidURLs``."""

    ignore_invalid_urls: bool = Field(default=False, alias="ignoreInvalidURLs")


#: (version, endpoint) -> the model of its body; endpoint is scrape, crawl, map or batch
REQUESTS: dict[tuple[str, str], type[Body]] = {
    ("v2", "scrape"): ScrapeRequest,
    ("v2", "crawl"): CrawlRequest,
    ("v2", "map"): MapRequest,
    ("v2", "batch"): BatchScrapeRequest,
    ("v1", "scrape"): ScrapeRequest,
    ("v1", "crawl"): V1CrawlRequest,
    ("v1", "map"): V1MapRequest,
    ("v1", "batch"): V1BatchScrapeRequest,
}


def parse_request(version: str, endpoint: str, body: Any) -> Body:
    """Parse the JSON *body* of ``/<version>/<endpoint>``; raises :class:`pydantic.ValidationError`
    (turn it into the 400 body with :func:`statecrawl.api.models.bad_request_body`)."""
    return REQUESTS[(version, endpoint)].model_validate(body)
