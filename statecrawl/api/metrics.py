"""``GET /metrics``: the Prometheus text of :mod:`statecrawl.observe.metrics`, on the API app
and on ``statecrawl metrics``' own small app (:func:`metrics_app`).

* 200: the text exposition format (``text/plain; version=0.0.4``), read from Redis
  on each scrape.
* 503, one plain-text line: Redis did not answer, or not within :data:`SCRAPE_TIMEOUT`.
  Never an empty 200: an empty answer would read as "no crawls" to Prometheus, not as
  "no data" (``up`` stays 1 on an empty 200).
* API keys: with keys, ``/metrics`` needs one like every route (Prometheus:
  ``authorization: {credentials: <key>}``) unless the operator opens it
  (``statecrawl serve --metrics-open`` / ``STATECRAWL_METRICS_OPEN``: ``create_app``'s
  ``metrics_open``). It is never counted by the rate and concurrency limits
  (``UNLIMITED_PATHS``): monitoring must not spend a client's budget, or be refused by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from statecrawl.api._http import EXCEPTION_HANDLERS, METRICS_PATH, ApiKeys
from statecrawl.frontier.connection import redis_from_url
from statecrawl.observe.metrics import CONTENT_TYPE, MetricsLimits, exposition

__all__ = ["METRICS_PATH", "SCRAPE_TIMEOUT", "metrics_app", "metrics_routes", "metrics_open"]

logger = logging.getLogger("statecrawl.api")

#: Seconds a scrape may take before it answers 503 (Prometheus' own scrape_timeout is 10 s).
SCRAPE_TIMEOUT = 9.0
_TRUE = frozenset({"1", "true", "yes", "on"})


def metrics_open(env: Mapping[str, str] = os.environ) -> bool:
    """``STATECRAWL_METRICS_OPEN``: true (1, true, yes, on) lets ``/metrics`` answer
    without an API key."""
    return (env.get("STATECRAWL_METRICS_OPEN") or "").strip().lower() in _TRUE


async def _scrape(request: Request, limits: MetricsLimits) -> Response:
    """The endpoint; its Redis client is the app's (``app.state.store.client`` on the API,
    ``app.state.redis`` on :func:`metrics_app`)."""
    state = request.app.state
    client = getattr(state, "redis", None) or state.store.client
    try:
        body = await asyncio.wait_for(exposition(client, limits), SCRAPE_TIMEOUT)
    except asyncio.TimeoutError:
        return _unavailable(f"reading Redis took longer than {SCRAPE_TIMEOUT:g} s")
    except (RedisError, OSError) as exc:  # OSError: a socket error redis-py did not wrap
        logger.warning("metrics: Redis error: %s", exc)
        return _unavailable(f"Redis did not answer ({type(exc).__name__})")
    return Response(body, media_type=CONTENT_TYPE)


def _unavailable(reason: str) -> Response:
    return PlainTextResponse(f"statecrawl metrics unavailable: {reason}\n", status_code=503,
                             headers={"Retry-After": "5"})


def metrics_routes(limits: MetricsLimits | None = None) -> list[Route]:
    """``GET /metrics`` for an app whose state holds the Redis client (see :func:`_scrape`);
    *limits*: default from ``STATECRAWL_METRICS_MAX_CRAWLS`` / ``_TOP_HOSTS``."""
    chosen = limits or MetricsLimits.from_env(os.environ)

    async def endpoint(request: Request) -> Response:
        return await _scrape(request, chosen)

    return [Route(METRICS_PATH, endpoint, methods=["GET"])]


def metrics_app(redis_url: str, limits: MetricsLimits, *, api_keys: Iterable[str] = (),
                client_name: str = "statecrawl:metrics") -> Starlette:
    """The standalone exporter's app: ``/metrics`` alone, one Redis client opened at start."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client: Redis = redis_from_url(redis_url, decode_responses=False,
                                       socket_connect_timeout=5, socket_timeout=8,
                                       health_check_interval=30, client_name=client_name)
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()

    handlers: dict[Any, Any] = dict(EXCEPTION_HANDLERS)
    return Starlette(routes=metrics_routes(limits),
                     middleware=[Middleware(ApiKeys, keys=tuple(api_keys))],
                     exception_handlers=handlers, lifespan=lifespan)
