"""The Firecrawl-compatible HTTP API: a Starlette ASGI app over the Redis job store.

:func:`create_app` holds a Redis client and its configuration, and nothing
else: every answer is read from (and every cancel written to) the
:class:`~statecrawl.api.jobs.JobStore`, so any number of API processes, on
any machines, answer any request about any job. A status page's ``next``
link is built from the request's own scheme and ``Host``, so whichever
process answers builds the same link the client can follow.

Routes (``<v>`` is ``v1`` or ``v2``; both read and write the same jobs):

=================================  ===================================================
``GET <v>/crawl/{id}``             status page, ``?skip=&limit=`` (100, at most 1,000)
``GET <v>/batch/scrape/{id}``      the same for a batch scrape
``GET <v>/crawl/{id}/errors``      failed pages and robots-blocked URLs (also batch)
``GET <v>/crawl/active``           running crawls
``DELETE <v>/crawl/{id}``          cancel; 409 when the crawl has already ended
``DELETE <v>/batch/scrape/{id}``   cancel; never 409: answers the status it has now
``POST <v>/scrape``                one page, scraped by a scrape worker (:mod:`.scrape`)
``POST <v>/map``                   the site's URLs, read by scrape workers (:mod:`.map`)
``POST <v>/crawl``                 a crawl job: stored here, run by job workers
                                   (``statecrawl worker --jobs N``, :mod:`statecrawl.spiders.job`)
``POST <v>/batch/scrape``          a batch job: one request per URL for the scrape
                                   workers (:mod:`.batch`)
``GET /openapi.json``              the schema (no API key needed)
``GET /metrics``                   Prometheus metrics of the crawls (:mod:`.metrics`)
``GET /crawls``, ``/crawls/{id}``  the live crawl page: the crawl list, one crawl as it runs
                                   (HTML shells, no API key needed; :mod:`.live`)
``GET /crawls.json``               the crawls, for the list page
``GET /crawls/{id}/data``          one crawl's facts (:func:`statecrawl.observe.crawl_snapshot`)
``POST /crawls/{id}/cancel``       cancel any crawl (a crawl job as ``DELETE``); 404, 409
=================================  ===================================================

An unknown, expired or malformed id is a 404 ``Job not found``; so is an id
of the other kind (a batch id on a crawl route). A scrape is served by the
long-running workers of the scrape service crawl and answered when their
reply comes (``{success: true, data: document}``), or 408 after its
``timeout``; a map is answered the same way, from the start page's links and
the site's sitemaps (``{success: true, links}``).

A crawl or batch start answers ``{success: true, id, url}`` once the job
record is in Redis (``x-idempotency-key``: the same key, the same job). A
status read of a running crawl also looks at its crawl's frontier: ``total``
counts the pages admitted so far, and a crawl that has ended ends its job
(:func:`statecrawl.api.worker.settle_crawl_job`), whoever was killed when.
Cancelling a crawl job cancels its crawl: its workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statecrawl.api._http import (
    DEFAULT_MAX_BODY, EXCEPTION_HANDLERS, ApiKeys, bad_request, error, read_json,
)
from statecrawl.api import webhooks
from statecrawl.api.batch import BatchService
from statecrawl.api.jobs import DEFAULT_JOB_TTL, Job, JobStore, Page
from statecrawl.api.limits import Limits
from statecrawl.api.live import live_routes
from statecrawl.api.map import MapService
from statecrawl.api.metrics import METRICS_PATH, metrics_routes
from statecrawl.api.models import (
    BatchScrapeRequest, CrawlRequest, MapRequest, ScrapeRequest, bad_request_body,
)
from statecrawl.api.models_v1 import parse_request
from statecrawl.api.openapi import openapi_schema
from statecrawl.api.responses import (
    NOT_FOUND, active_body, errors_body, map_body, start_body, status_body, status_url,
)
from statecrawl.api.scrape import ScrapeError, ScrapeService
from statecrawl.api.worker import cancel_crawl_job, settle_crawl_job
from statecrawl.frontier.connection import redis_from_url
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.sweep import API_SWEEP_INTERVAL, sweep_every

__all__ = ["IDEMPOTENCY_HEADER", "create_app", "redis_client"]

IDEMPOTENCY_HEADER = "x-idempotency-key"
_MAX_IDEMPOTENCY_KEY = 256  # characters


def redis_client(url: str) -> Redis:
    """The app's client: bytes replies (the job store needs them), bounded connect and reads."""
    client: Redis = redis_from_url(url, decode_responses=False, socket_connect_timeout=5,
                                   socket_timeout=15, health_check_interval=30,
                                   client_name="statecrawl:api")
    return client


def create_app(redis_url: str, *, api_keys: Iterable[str] = (), max_body: int = DEFAULT_MAX_BODY,
               job_ttl: float = DEFAULT_JOB_TTL, scrape_crawl: str | None = None,
               rate_limit: int = 0, concurrency: int = 0, finished_ttl: float = 0.0,
               metrics_open: bool = False) -> Starlette:
    """The API app for the Redis at *redis_url* (one client per process, opened at start-up).

    *api_keys*: when any, every route but ``/openapi.json`` needs one as a Bearer token.
    *max_body*: the largest request body, in bytes. *job_ttl*: seconds a job is kept after
    its last change (a cancel is a change). *scrape_crawl*: the service crawl scrapes go to
    (default: ``STATECRAWL_API_SCRAPE_CRAWL``, else ``api-scrape``). *rate_limit*: requests
    per minute, *concurrency*: requests in flight at once, per API key (else per client
    address), 0 for none; kept in Redis for every process (:mod:`.limits`). *finished_ttl*:
    seconds after which finished crawls are purged by a sweep this process runs at start and
    every ``API_SWEEP_INTERVAL`` (:mod:`statecrawl.frontier.lifecycle`); 0 keeps them.
    *metrics_open*: ``/metrics`` answers without an API key."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = redis_client(redis_url)
        app.state.store = JobStore(client, ttl=job_ttl)
        app.state.scrapes = ScrapeService(client, scrape_crawl)
        app.state.maps = MapService(app.state.scrapes)
        app.state.batches = BatchService(app.state.scrapes, app.state.store)
        sweeper = asyncio.ensure_future(sweep_every(client, finished_ttl, API_SWEEP_INTERVAL)) \
            if finished_ttl else None
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            try:
                await app.state.scrapes.close()
            finally:
                await client.aclose()

    routes = [Route("/openapi.json", _openapi, methods=["GET"])]
    for version in ("v1", "v2"):
        routes += [
            Route(f"/{version}/crawl/active", _active, methods=["GET"]),
            Route(f"/{version}/crawl/{{id}}", _status, methods=["GET"]),
            Route(f"/{version}/crawl/{{id}}", _cancel, methods=["DELETE"]),
            Route(f"/{version}/crawl/{{id}}/errors", _errors, methods=["GET"]),
            Route(f"/{version}/batch/scrape/{{id}}", _status, methods=["GET"]),
            Route(f"/{version}/batch/scrape/{{id}}", _cancel, methods=["DELETE"]),
            Route(f"/{version}/batch/scrape/{{id}}/errors", _errors, methods=["GET"]),
        ]
        routes += [Route(f"/{version}/{path}", _start, methods=["POST"])
                   for path in ("scrape", "crawl", "map", "batch/scrape")]
    routes += metrics_routes()
    routes += live_routes()
    keys = tuple(api_keys)
    middleware = [Middleware(ApiKeys, keys=keys, open_paths=[METRICS_PATH] if metrics_open else []),
                  Middleware(Limits, redis_url=redis_url, rate_limit=rate_limit,
                             concurrency=concurrency, keyed=bool(keys))]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.max_body = max_body
    return app


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _route(request: Request) -> tuple[str, str]:
    """(version, kind) of a job route: ``/v2/batch/scrape/{id}`` -> ("v2", "batch")."""
    version, rest = request.url.path.lstrip("/").split("/", 1)
    return version, "batch" if rest.startswith("batch/") else "crawl"


def _base(request: Request) -> str:
    """``scheme://host[:port]`` as the client reached this process (its ``Host`` header)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _query_int(request: Request, name: str, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise _QueryError(name, f"{name} must be a whole number of at least {minimum}")
    return int(raw)


class _QueryError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message


async def _status(request: Request) -> Response:
    version, kind = _route(request)
    try:
        skip = _query_int(request, "skip", 0) or 0
        limit = _query_int(request, "limit", 1)
    except _QueryError as exc:
        return bad_request([{"code": "query", "path": ["query", exc.name], "message": exc.message}])
    job_id = request.path_params["id"]
    store = _store(request)
    page = await store.page(job_id, skip, limit)
    if page is None or page.job.kind != kind:
        return JSONResponse(NOT_FOUND, status_code=404)
    if not page.job.finished:
        page = await _progress(request, store, page, skip, limit)
    next_url = None if page.next_skip is None else status_url(
        _base(request), version, kind, job_id, page.next_skip, limit)
    return JSONResponse(status_body(page, next_url))


async def _own_job(request: Request) -> tuple[str, JobStore, Job | None]:
    """The route's kind, the job store, and the path's job if it is of that kind (None: a 404)."""
    _version, kind = _route(request)
    store = _store(request)
    job = await store.get(request.path_params["id"])
    return kind, store, job if job is not None and job.kind == kind else None


async def _errors(request: Request) -> Response:
    _kind, store, job = await _own_job(request)
    found = None if job is None else await store.errors(job.id)
    if found is None:
        return JSONResponse(NOT_FOUND, status_code=404)
    return JSONResponse(errors_body(*found))


async def _active(request: Request) -> Response:
    store = _store(request)
    jobs = await store.active("crawl")
    requests = await asyncio.gather(*(store.request(job.id) for job in jobs))
    options = {job.id: _options(body) for job, body in zip(jobs, requests) if body is not None}
    return JSONResponse(active_body(jobs, options))


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """A stored crawl request as an active crawl's ``options``: all but the URL."""
    return {k: v for k, v in body.items() if k != "url"}


async def _cancel(request: Request) -> Response:
    kind, store, job = await _own_job(request)
    change = None if job is None else await (
        cancel_crawl_job(store, job.id) if kind == "crawl" else store.cancel(job.id))
    if change is None:
        return JSONResponse(NOT_FOUND, status_code=404)
    if kind == "crawl" and not change.changed:
        return error(409, f"Crawl is already {change.status}", status=change.status)
    return JSONResponse({"success": True, "status": change.status})


async def _start(request: Request) -> Response:
    version, rest = request.url.path.lstrip("/").split("/", 1)
    endpoint = "batch" if rest == "batch/scrape" else rest
    body = await read_json(request, request.app.state.max_body)
    try:
        parsed = parse_request(version, endpoint, body)
    except ValidationError as exc:
        return JSONResponse(bad_request_body(exc), status_code=400)
    if endpoint == "scrape":
        assert isinstance(parsed, ScrapeRequest)
        service: ScrapeService = request.app.state.scrapes
        try:
            document = await service.scrape(parsed)
        except ScrapeError as exc:
            return error(exc.status, str(exc), code=exc.code)
        return JSONResponse({"success": True, "data": document})
    if endpoint == "map":
        assert isinstance(parsed, MapRequest)
        maps: MapService = request.app.state.maps
        try:
            result = await maps.map(parsed)
        except ScrapeError as exc:
            return error(exc.status, f"Map failed: {exc}", code=exc.code)
        return JSONResponse(map_body(result.links, version, result.warning))
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    if key is not None and len(key) > _MAX_IDEMPOTENCY_KEY:
        return bad_request([{"code": "idempotency_key", "path": ["headers", IDEMPOTENCY_HEADER],
                             "message": f"at most {_MAX_IDEMPOTENCY_KEY} characters"}])
    store = _store(request)
    kind = "batch" if endpoint == "batch" else "crawl"
    secret = b""
    if isinstance(parsed, CrawlRequest) and parsed.scrape_options.headers:
        # the crawl's workers send them (pass-through, to the crawl's own hosts only); kept
        # sealed beside the job, deleted when it ends -- never in its request or documents
        scrapes: ScrapeService = request.app.state.scrapes
        secret = scrapes.sealer.seal(json.dumps({"headers": parsed.scrape_options.headers}).encode())
    job, created = await store.create(kind, parsed, key, secret)
    if created:
        await webhooks.enqueue(store.client, job.id, kind, "started")
    invalid = None
    if isinstance(parsed, BatchScrapeRequest):
        if created or not job.queued:  # a start killed before its pages were queued is repaired
            batches: BatchService = request.app.state.batches
            await batches.enqueue(job.id, parsed)
        invalid = parsed.invalid_urls if parsed.ignore_invalid_urls else None
    return JSONResponse(start_body(job.id, status_url(_base(request), version, kind, job.id), invalid))


async def _progress(request: Request, store: JobStore, page: Page, skip: int,
                    limit: int | None) -> Page:
    """A running job's page, brought up to date with what executes it (see the module docstring)."""
    job = page.job
    if job.kind == "batch":
        batches: BatchService = request.app.state.batches
        await batches.repair(job)
        return page
    keys = CrawlKeys(job.id)
    async with store.client.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.meta, ["state", "shards"])
        pipe.hget(keys.stats, "admitted")
        (state, shards), admitted = await pipe.execute()
    if int(shards or 1) > 1:  # a sharded crawl: its shards' counters summed
        n = int(shards)
        async with store.client.pipeline(transaction=False) as pipe:
            for s in range(1, n):
                pipe.hget(CrawlKeys(job.id, s, n).stats, "admitted")
            admitted = sum(int(v or 0) for v in [admitted, *await pipe.execute()])
    if state in (b"finished", b"cancelled"):
        await settle_crawl_job(store, job.id)
        return await store.page(job.id, skip, limit) or page
    if admitted is not None:
        total = min(int(admitted), job.limit) if job.limit else int(admitted)
        page = dataclasses.replace(page, job=dataclasses.replace(job, total=max(job.total, total)))
    return page


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema())
