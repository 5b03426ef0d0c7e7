"""Request bodies: SDK-built bodies parse, unknown fields are ignored, v1 names map, errors are 400s."""

from __future__ import annotations

from typing import Any

import pytest
from firecrawl.v1.client import V1ScrapeOptions
from firecrawl.v2.methods.batch import prepare_batch_scrape_request
from firecrawl.v2.methods.crawl import _prepare_crawl_request
from firecrawl.v2.methods.map import _prepare_map_request
from firecrawl.v2.methods.scrape import _prepare_scrape_request
from firecrawl.v2.types import CrawlRequest as SdkCrawl
from firecrawl.v2.types import MapOptions, ScrapeOptions, WebhookConfig
from pydantic import ValidationError

from statecrawl.api import bad_request_body, parse_request
from tests.api._sdk import v1_body

SECRET = "Bearer do-not-store"


def sdk_scrape_options() -> ScrapeOptions:
    return ScrapeOptions(
        formats=["markdown", "raw_html", "links", {"type": "screenshot", "full_page": True},
                 {"type": "json", "prompt": "p", "schema": {"type": "object"}}, "summary"],
        headers={"Authorization": SECRET}, include_tags=["article"], exclude_tags=["nav"],
        only_main_content=False, wait_for=1000, timeout=30000, mobile=True, max_age=0)


def test_v2_crawl_body_from_the_sdk() -> None:
    body = _prepare_crawl_request(SdkCrawl(
        url="https://example.com/docs", include_paths=["^/docs/.*"], exclude_paths=["/old/"],
        max_discovery_depth=2, sitemap="skip", ignore_query_parameters=True, limit=50,
        crawl_entire_domain=True, allow_subdomains=True, allow_external_links=False,
        ignore_robots_txt=True, delay=2, max_concurrency=4, regex_on_full_url=True,
        webhook=WebhookConfig(url="https://hooks.example/x", headers={"X-Auth": "hook"}, events=["page"]),
        scrape_options=sdk_scrape_options(), zero_data_retention=True))
    req = parse_request("v2", "crawl", body)
    assert (req.url, req.limit, req.max_discovery_depth, req.sitemap) == (
        "https://example.com/docs", 50, 2, "skip")
    assert req.include_paths == ["^/docs/.*"] and req.regex_on_full_url and req.crawl_entire_domain
    assert req.allow_subdomains and req.ignore_robots_txt and req.ignore_query_parameters
    assert (req.delay, req.max_concurrency) == (2, 4)
    opts = req.scrape_options
    assert opts.format_names == ["markdown", "rawHtml", "links", "screenshot"]
    assert opts.unsupported_formats == ["json", "summary"] and opts.screenshot_full_page
    assert (opts.only_main_content, opts.wait_for, opts.timeout) == (False, 1000, 30000)
    assert opts.include_tags == ["article"] and opts.headers == {"Authorization": SECRET}
    assert req.webhook is not None and req.webhook.events == ["page"]
    stored = req.stored()
    assert "headers" not in stored["scrapeOptions"] and SECRET not in repr(stored)
    assert stored["webhook"]["headers"] == {"X-Auth": "hook"}  # sending the webhook needs them


def test_v2_scrape_map_batch_bodies_from_the_sdk() -> None:
    scrape = parse_request("v2", "scrape",
                           _prepare_scrape_request("https://example.com", sdk_scrape_options()))
    assert scrape.url == "https://example.com" and "links" in scrape.format_names
    mapped = parse_request("v2", "map", _prepare_map_request("https://example.com", MapOptions(
        search="docs", sitemap="only", include_subdomains=False, limit=10, timeout=5000)))
    assert (mapped.search, mapped.sitemap, mapped.include_subdomains, mapped.limit) == (
        "docs", "only", False, 10)
    batch = parse_request("v2", "batch", prepare_batch_scrape_request(
        ["https://a.example/1", "https://b.example/2"], options=sdk_scrape_options(),
        webhook="https://hooks.example/b", max_concurrency=2, ignore_invalid_urls=False))
    assert batch.urls == ["https://a.example/1", "https://b.example/2"] and batch.max_concurrency == 2
    assert batch.webhook is not None and batch.webhook.url == "https://hooks.example/b"
    assert "headers" not in batch.stored()


def test_v1_bodies_from_the_sdk_map_to_v2() -> None:
    body, headers = v1_body("async_crawl_url", "https://example.com", max_depth=3, limit=20,
                            ignore_sitemap=True, allow_backward_links=True, idempotency_key="k1",
                            scrape_options=V1ScrapeOptions(formats=["markdown", "screenshot@fullPage"],
                                                           headers={"Cookie": SECRET}))
    assert headers["x-idempotency-key"] == "k1"
    req = parse_request("v1", "crawl", body)
    assert (req.max_discovery_depth, req.sitemap, req.crawl_entire_domain, req.limit) == (3, "skip", True, 20)
    assert req.scrape_options.screenshot_full_page
    stored = req.stored()
    assert not {"maxDepth", "ignoreSitemap", "allowBackwardLinks"} & stored.keys()
    assert stored["maxDiscoveryDepth"] == 3 and SECRET not in repr(stored)
    body, _ = v1_body("async_batch_scrape_urls", ["https://a.example/"], formats=["markdown", "content"])
    batch = parse_request("v1", "batch", body)
    assert batch.unsupported_formats == ["content"] and batch.urls == ["https://a.example/"]


@pytest.mark.parametrize(("v1", "sitemap"), [
    ({"ignoreSitemap": True}, "skip"), ({"sitemapOnly": True}, "only"),
    ({"sitemapOnly": True, "ignoreSitemap": True}, "only"), ({}, "include"),
    ({"ignoreSitemap": True, "sitemap": "only"}, "only"),
])
def test_v1_map_sitemap(v1: dict[str, Any], sitemap: str) -> None:
    assert parse_request("v1", "map", {"url": "https://example.com", **v1}).sitemap == sitemap


def test_explicit_v2_name_wins_in_a_v1_body() -> None:
    req = parse_request("v1", "crawl", {"url": "https://e.com", "maxDepth": 5, "maxDiscoveryDepth": 1})
    assert req.max_discovery_depth == 1


def test_unknown_fields_are_ignored() -> None:
    body = {"url": "https://example.com", "origin": "python-sdk@9", "integration": None,
            "deduplicateSimilarURLs": True, "futureOption": {"x": [1]}, "prompt": "all docs",
            "scrapeOptions": {"formats": ["markdown"], "blockAds": True, "maxAge": 1, "parsers": ["pdf"],
                              "storeInCache": True, "actions": [{"type": "wait", "milliseconds": 1}]}}
    req = parse_request("v2", "crawl", body)
    assert req.url == "https://example.com" and "futureOption" not in req.stored()


def test_formats_names_objects_and_aliases() -> None:
    opts = parse_request("v2", "scrape", {"url": "e.com", "formats": [
        "html", {"type": "rawHtml"}, "screenshot", {"type": "screenshot", "fullPage": True},
        {"type": "changeTracking", "modes": ["git-diff"]}, "html"]})
    assert opts.format_names == ["html", "rawHtml", "screenshot"] and opts.screenshot_full_page
    assert opts.unsupported_formats == ["changeTracking"]
    assert parse_request("v2", "scrape", {"url": "e.com"}).format_names == ["markdown"]
    assert parse_request("v2", "scrape", {"url": "e.com"}).url == "http://e.com"


@pytest.mark.parametrize(("endpoint", "body", "path", "says"), [
    ("scrape", {"url": "ftp://example.com/x"}, ["url"], "http or https"),
    ("scrape", {"url": "https://"}, ["url"], "host"),
    ("scrape", {"url": "http://http://example.com"}, ["url"], "host"),
    ("scrape", {"url": ""}, ["url"], "empty"),
    ("scrape", {"url": "javascript:alert(1)"}, ["url"], "not javascript"),
    ("scrape", {"url": 42}, ["url"], "string"),
    ("scrape", {}, ["url"], "required"),
    ("scrape", {"url": "https://e.com", "onlyMainContent": "yes"}, ["onlyMainContent"], "boolean"),
    ("scrape", {"url": "https://e.com", "formats": "markdown"}, ["formats"], "list"),
    ("scrape", {"url": "https://e.com", "formats": [7]}, ["formats"], "format 0"),
    ("scrape", {"url": "https://e.com", "waitFor": 20000, "timeout": 30000}, [], "half of timeout"),
    ("crawl", {"url": "https://e.com", "limit": "10"}, ["limit"], "integer"),
    ("crawl", {"url": "https://e.com", "limit": 0}, ["limit"], "greater than 0"),
    ("crawl", {"url": "https://e.com", "sitemap": "never"}, ["sitemap"], "'skip'"),
    ("crawl", {"url": "https://e.com", "excludePaths": ["(unclosed"]}, ["excludePaths"],
     "regular expression"),
    ("crawl", {"url": "https://e.com", "scrapeOptions": {"includeTags": "main"}},
     ["scrapeOptions", "includeTags"], "list"),
    ("crawl", {"url": "https://e.com", "webhook": {"url": "mailto:x@y.z"}}, ["webhook", "url"], "http"),
    ("map", {"url": "https://e.com", "limit": 30001}, ["limit"], "30000"),
    ("batch", {"urls": []}, ["urls"], "at least one"),
    ("batch", {"urls": "https://e.com"}, ["urls"], "list"),
])
def test_bad_bodies_are_400_bodies(endpoint: str, body: dict[str, Any], path: list[str], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_request("v2", endpoint, body)
    out = bad_request_body(err.value)
    assert out["success"] is False and out["error"] == "Bad Request" and out["code"] == "BAD_REQUEST"
    assert out["details"][0]["path"] == path
    assert says in out["details"][0]["message"]
    assert all(set(d) == {"code", "path", "message"} for d in out["details"])


def test_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValidationError) as err:
        parse_request("v2", "crawl", ["https://e.com"])
    assert bad_request_body(err.value)["details"] == [
        {"code": "model_type", "path": [], "message": "the body must be a JSON object"}]


def test_whole_floats_are_ints() -> None:
    assert parse_request("v2", "crawl", {"url": "https://e.com", "limit": 10.0}).limit == 10
    with pytest.raises(ValidationError):
        parse_request("v2", "crawl", {"url": "https://e.com", "limit": 10.5})


def test_batch_invalid_urls_v2_drops_v1_refuses() -> None:
    body = {"urls": ["https://ok.example/", "ftp://bad.example/", 5], "invalidUrls": ["injected"]}
    v2 = parse_request("v2", "batch", body)
    assert v2.urls == ["https://ok.example/"] and v2.invalid_urls == ["ftp://bad.example/", "5"]
    assert "invalidUrls" not in v2.stored() and "invalid_urls" not in v2.stored()
    with pytest.raises(ValidationError) as err:
        parse_request("v1", "batch", {"urls": body["urls"][:2]})
    assert bad_request_body(err.value)["details"][0]["message"].startswith("URL 1:")
    assert parse_request("v1", "batch", {**body, "ignoreInvalidURLs": True}).urls == ["https://ok.example/"]
