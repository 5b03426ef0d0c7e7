"""The Firecrawl-compatible HTTP API: request bodies, responses, the job store, the ASGI app.

* ``models`` (v2 request bodies: URL and format rules, the 400 body),
  ``models_v1`` (v1 bodies read into the v2 models; the endpoint -> model table);
* ``responses`` (documents, status pages, start / errors / map / active bodies,
  shaped as the SDKs parse them);
* ``app`` (``create_app``: the Starlette app answering from the job store),
  ``_http`` (API keys, body limits, errors as JSON), ``openapi`` (the schema),
  ``limits`` (per-key rate and concurrency limits in Redis, shared by every process);
* ``jobs`` (``JobStore``: jobs, their documents and errors in Redis; the key
  schema in its docstring, each write a Lua script in ``lua/``).

* ``scrape`` (``ScrapeService``: a scrape enqueued into the scrape service
  crawl, its worker's reply awaited through Redis); ``map`` (``MapService``: a
  map from the start page and the sitemaps, read by the same scrape workers).
* ``webhooks`` (``webhooks.enqueue``: a job event queued in Redis for the
  job's webhook; ``WebhookSender``: sends them from any worker, retried,
  signed, to checked addresses only).

API processes hold no state: everything lives in Redis. Uses the frontier
(service crawls), sessions (sealing a scrape's headers) and net (the address
policy webhooks are sent under), nothing else.
"""

from __future__ import annotations

from statecrawl.api._http import DEFAULT_MAX_BODY, parse_api_keys, parse_max_body
from statecrawl.api.app import create_app
from statecrawl.api.jobs import DEFAULT_JOB_TTL, Job, JobStore, Page, Transition, job_ttl
from statecrawl.api.limits import Limiter, Limits, parse_concurrency, parse_rate_limit
from statecrawl.api.map import MapResult, MapService
from statecrawl.api.models import (
    SUPPORTED_FORMATS, BatchScrapeRequest, CrawlRequest, MapRequest, ScrapeOptions, ScrapeRequest,
    bad_request_body,
)
from statecrawl.api.models_v1 import REQUESTS, parse_request
from statecrawl.api.responses import (
    NOT_FOUND, active_body, document_from_page, errors_body, map_body, start_body, status_body,
    status_url,
)
from statecrawl.api.scrape import ScrapeError, ScrapeFailed, ScrapeService, ScrapeTimeout
from statecrawl.api.webhooks import WebhookSender

__all__ = [
    "DEFAULT_JOB_TTL", "DEFAULT_MAX_BODY", "NOT_FOUND", "REQUESTS", "SUPPORTED_FORMATS",
    "BatchScrapeRequest", "CrawlRequest", "Job", "JobStore", "Limiter", "Limits", "MapRequest",
    "MapResult", "MapService", "Page", "ScrapeError",
    "ScrapeFailed", "ScrapeOptions", "ScrapeRequest", "ScrapeService", "ScrapeTimeout",
    "Transition", "WebhookSender", "active_body", "bad_request_body", "create_app",
    "document_from_page", "errors_body", "job_ttl", "map_body", "parse_api_keys",
    "parse_concurrency", "parse_max_body", "parse_rate_limit", "parse_request", "start_body",
    "status_body", "status_url",
]
