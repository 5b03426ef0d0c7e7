"""``scrapy crawl job -a crawl_id=<job id>``: a crawl job of the HTTP API, run as a ``site`` crawl.

``POST /v2/crawl`` stores the job (:mod:`statecrawl.api.jobs`) and nothing
else; the job's workers (``statecrawl worker --jobs N`` starts them,
:mod:`statecrawl.cli.jobs`) run this spider with the job id as the crawl id.
It reads the job's request from Redis when it starts and crawls as the
``site`` spider does -- same frontier, leases, robots.txt, rendering and
exactly-once commits -- with Firecrawl's options:

==============================  ==================================================
request field                   here
==============================  ==================================================
``url``, ``limit``              the start URL; the most pages admitted, crawl-wide
``maxDiscoveryDepth``           ``max_depth`` (links from the start page are depth 1)
``includePaths``/``excludePaths``  regexes on the URL's path (on the whole URL with
                                ``regexOnFullURL``); a URL must match one include
                                (when any) and no exclude
``crawlEntireDomain``           false (default): only URLs under the start URL's path
``allowSubdomains``             the start host's subdomains too
``sitemap``                     ``include``: sitemaps from robots.txt add pages;
                                ``skip``: not read; ``only``: no link is followed
``ignoreQueryParameters``       links are followed without their query string
``ignoreRobotsTxt``             robots.txt is not obeyed
``delay``                       seconds between two requests of a host, for
                                all the job's workers together (its politeness
                                budget, :mod:`statecrawl.frontier.hosts`)
``maxConcurrency``              requests of a host in flight at once, for all
                                the job's workers together
``scrapeOptions``               formats, ``onlyMainContent``, ``includeTags``,
                                ``excludeTags``, ``waitFor`` (renders in Chromium),
                                ``timeout`` (per page), ``headers`` (read from the
                                job's sealed secret; sent pass-through to the
                                crawl's own hosts, never stored)
==============================  ==================================================

Each page becomes a :class:`~statecrawl.api.worker.JobResult` (a redirect is
not a page: its target is) and each URL robots.txt refuses a
:class:`~statecrawl.api.worker.RobotsBlocked`, written into the job by
:class:`~statecrawl.api.worker.JobDocuments`. The URLs come from API users,
so the spider refuses to start without the net guard (``STATECRAWL_NET_GUARD``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from twisted.python.failure import Failure

from statecrawl.api.jobs import JobStore
from statecrawl.api.models import CrawlRequest
from statecrawl.api.models_v1 import parse_request
from statecrawl.api.scrape import item_options, unsupported_formats
from statecrawl.api.worker import JobResult, RobotsBlocked
from statecrawl.exceptions import ConfigError, SecretKeyError
from statecrawl.frontier.connection import connect_sync, resolve_redis_url
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier.scope import Scope
from statecrawl.output.items import Page
from statecrawl.sessions.crypto import Sealer
from statecrawl.spiders.site import SiteSpider

__all__ = ["JobScope", "JobSpider", "read_job"]


class JobScope(Scope):
    """The ``site`` scope (host, port, subdomains) with Firecrawl's path rules (module docstring)."""

    def __init__(self, start_url: str, *, allow_subdomains: bool, include_paths: list[str],
                 exclude_paths: list[str], regex_on_full_url: bool, entire_domain: bool) -> None:
        super().__init__(start_url, allow_subdomains=allow_subdomains)
        self.include_paths = [re.compile(p) for p in include_paths]  # checked by the API's model
        self.exclude_paths = [re.compile(p) for p in exclude_paths]
        self.full_url = regex_on_full_url
        self.prefix = None if entire_domain else (urlsplit(start_url).path or "/")

    def allows(self, url: str) -> bool:
        if not self.host_allowed(url):
            return False
        path = urlsplit(url).path or "/"
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        target = url if self.full_url else path
        if self.include_paths and not any(p.search(target) for p in self.include_paths):
            return False
        return not any(p.search(target) for p in self.exclude_paths)


def read_job(crawler: Crawler, job_id: str) -> tuple[CrawlRequest, str, dict[str, str]]:
    """The crawl job's request, status and headers (its sealed secret, opened), read from
    Redis; ConfigError if there is no such job."""
    client = connect_sync(resolve_redis_url(crawler.settings), name="statecrawl:job")
    try:
        keys = JobStore.keys(job_id)
        raw, secret = client.get(keys[1]), client.get(keys[7])
        kind, status = client.hmget(keys[0], "kind", "status")
    finally:
        client.close()
    if raw is None or kind != b"crawl":
        raise ConfigError(f"there is no crawl job {job_id!r} in this Redis (expired, or never "
                          "started)")
    try:
        request = parse_request("v2", "crawl", json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"crawl job {job_id!r}: its stored request is unreadable ({exc})") from None
    assert isinstance(request, CrawlRequest)
    headers: dict[str, str] = {}
    if secret:
        try:
            opened = json.loads(Sealer.from_settings(crawler.settings).open(secret, "the job's headers"))
        except (SecretKeyError, ValueError) as exc:
            raise ConfigError(f"crawl job {job_id!r}: cannot read its headers ({exc})") from None
        headers = {str(k): str(v) for k, v in (opened.get("headers") or {}).items()}
    return request, (status or b"").decode(), headers


class JobSpider(SiteSpider):
    name = "job"
    custom_settings: dict[str, Any] | None = {
        "STATECRAWL_STORE_ITEMS": False,  # documents go to the job, not to the crawl's items
        "FEEDS": {},
    }

    def __init__(self, *, job: CrawlRequest, job_status: str = "scraping", **kwargs: Any) -> None:
        options = job.scrape_options
        wait = options.wait_for or None
        super().__init__(
            url=job.url, limit=job.limit, max_depth=job.max_discovery_depth,
            allow_subdomains=job.allow_subdomains,
            formats=",".join(item_options(options)["formats"]) or None,
            render="browser" if wait else None, wait_ms=wait, **kwargs)
        self.job, self.job_status = job, job_status
        self.scope = JobScope(self.start_url, allow_subdomains=job.allow_subdomains,
                              include_paths=job.include_paths, exclude_paths=job.exclude_paths,
                              regex_on_full_url=job.regex_on_full_url,
                              entire_domain=job.crawl_entire_domain)
        self.page_options = {"only_main_content": options.only_main_content,
                             "include_tags": options.include_tags,
                             "exclude_tags": options.exclude_tags}
        self.api_formats = options.format_names
        self.unsupported = unsupported_formats(options)
        # the job's politeness budget, fleet-wide (read by PolitenessMiddleware)
        self.host_budget = {name: value for name, value in (
            ("delay", job.delay), ("concurrency", job.max_concurrency)) if value}
        self.timeout = options.timeout / 1000 if options.timeout else None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> JobSpider:
        if not crawler.settings.getbool("STATECRAWL_NET_GUARD"):
            raise ConfigError("the job spider fetches URLs that API users submit: run it with "
                              "STATECRAWL_NET_GUARD=true (statecrawl worker --jobs does), and "
                              "STATECRAWL_NET_ALLOW for the private hosts it may reach")
        job_id = validate_crawl_id(kwargs.get("crawl_id") or "")
        job, status, headers = read_job(crawler, job_id)
        if headers:  # pass-through: sent to the crawl's hosts, never stored (sessions.passthrough)
            kwargs["headers"] = json.dumps(headers)
        spider = super().from_crawler(crawler, *args, job=job, job_status=status, **kwargs)
        assert isinstance(spider, JobSpider)
        return spider

    async def start(self) -> AsyncIterator[Request]:
        if self.job_status != "scraping":
            self.logger.info("job %s is %s: nothing to crawl", self.crawl_id, self.job_status)
            return
        if self.job.sitemap == "skip":
            yield self._follow(self.start_url)
            return
        async for request in super().start():
            yield request

    def _may_expand(self, depth: int) -> bool:
        return self.job.sitemap != "only" and super()._may_expand(depth)

    def _follow(self, url: str) -> Request:
        if self.job.ignore_query_parameters:
            parts = urlsplit(url)
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        request = super()._follow(url)
        if self.job.ignore_robots_txt:
            request.meta["dont_obey_robotstxt"] = True
        if self.timeout:
            request.meta["download_timeout"] = self.timeout
        return request

    def _results(self, outputs: Iterator[Any]) -> Iterator[Any]:
        for out in outputs:
            if not isinstance(out, Page):
                yield out
            elif not (out.status and 300 <= out.status < 400 and not out.error):
                yield JobResult(self.crawl_id, out.url, dataclasses.asdict(out), self.api_formats,
                                self.unsupported)
            # else: a redirect, which is no page of its own: its target is

    def parse(self, response: Response) -> Iterator[Any]:
        yield from self._results(super().parse(response))

    def on_error(self, failure: Failure) -> Iterator[Any]:
        if failure.check(IgnoreRequest) and "robots.txt" in str(failure.value):
            yield RobotsBlocked(self.crawl_id, failure.request.url)  # type: ignore[attr-defined]
            return
        yield from self._results(super().on_error(failure))
