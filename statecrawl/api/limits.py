"""Per-client rate and concurrency limits, shared by every API process through Redis.

:class:`Limits` is ASGI middleware that runs inside :class:`~statecrawl.api._http.ApiKeys`
(a request without a valid key is a 401 and counts against nothing). One Lua script
(``lua/limit_enter.lua``) admits a request, on Redis' clock, so the limits hold for the
whole fleet behind a load balancer, however many processes it has:

* rate -- ``STATECRAWL_API_RATE_LIMIT`` requests per minute (0: none), as GCRA: a client
  may send a burst of that many at once, then one every ``60 / limit`` seconds; past it,
  429 ``RATE_LIMITED`` with ``Retry-After`` (whole seconds, rounded up). Every response
  of a rate-limited client carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``
  (requests left in the burst).
* concurrency -- ``STATECRAWL_API_CONCURRENCY`` requests in flight at once (0: none);
  past it, 429 ``CONCURRENCY_LIMITED`` with ``Retry-After: 1``. A request holds a slot
  until its response's last part goes out (so the client's next request finds it free).
  The slot is a lease of :data:`LEASE` seconds, renewed every third of that while the
  request runs, so a long request keeps its slot and a process that dies mid-request
  frees its slots within :data:`LEASE` seconds.

A refused request spends neither a rate token nor a slot. ``/openapi.json`` and ``/metrics`` are never limited.

Who is limited: with API keys, each key, named in Redis by the first 16 hex digits of
its SHA-256 (no key is stored in Redis); without keys, each client address (as uvicorn
reports it: behind a proxy, the proxy's, unless uvicorn trusts its ``X-Forwarded-For``
with ``FORWARDED_ALLOW_IPS``). An open API does not limit per token: any token is
accepted there, so a new one would buy a new bucket.

Redis failing fails open: the request goes through unlimited, a warning is logged (at
most once a minute per process), and the limits are not asked for :data:`OPEN_FOR`
seconds, so a Redis that hangs does not add its timeout to every request. An API whose
Redis is down answers 503 from its routes anyway; the limiter adds no outage of its own.

Key schema: the ``sc:api:rate:{<who>}`` and ``sc:api:inflight:{<who>}`` rows of
:mod:`statecrawl.frontier.keys`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statecrawl.api._http import UNLIMITED_PATHS, error, is_open
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.connection import redis_from_url

__all__ = ["LEASE", "OPEN_FOR", "Limiter", "Limits", "Verdict", "parse_concurrency",
           "parse_rate_limit"]

logger = logging.getLogger("statecrawl.api")

LEASE = 60.0  #: seconds a request's concurrency slot lasts unless renewed (a third of it)
OPEN_FOR = 5.0  #: seconds the limits are not asked after a Redis error (fail open)
WARN_EVERY = 60.0  #: seconds between two warnings of one process about Redis errors
_MINUTE_US = 60_000_000
_ADMITTED, _RATE, _BUSY = 1, 2, 3


def _parse(name: str, value: str | int | None, what: str) -> int:
    if value is None or value == "":
        return 0
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = -1
    if limit < 0:
        raise ConfigError(f"{name}={value!r}: give {what} as a whole number, e.g. 60 "
                          "(0: no limit)")
    return limit


def parse_rate_limit(value: str | int | None) -> int:
    """STATECRAWL_API_RATE_LIMIT: requests per minute per client (None or '': 0, no limit)."""
    return _parse("STATECRAWL_API_RATE_LIMIT", value, "the requests per minute per API key")


def parse_concurrency(value: str | int | None) -> int:
    """STATECRAWL_API_CONCURRENCY: requests in flight at once per client (None or '': 0)."""
    return _parse("STATECRAWL_API_CONCURRENCY", value, "the requests in flight at once per API key")


@functools.cache
def _lua(name: str) -> str:
    return resources.files("statecrawl.api").joinpath("lua", f"limit_{name}.lua").read_text()


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Limiter.enter` decided. *code*: None (admitted), ``RATE_LIMITED`` or
    ``CONCURRENCY_LIMITED``; *left*: rate requests left in the burst; *in_flight*: the
    client's requests in flight when refused; *retry_after*: seconds until a retry fits."""

    code: str | None
    left: int = 0
    in_flight: int = 0
    retry_after: float = 0.0


class Limiter:
    """The limits in Redis (see the module docstring); *client* is a redis.asyncio client."""

    def __init__(self, client: Redis, *, rate_limit: int = 0, concurrency: int = 0,
                 lease: float = LEASE) -> None:
        self.client, self.rate_limit, self.concurrency = client, rate_limit, concurrency
        self.interval_us = max(1, _MINUTE_US // rate_limit) if rate_limit else 0
        self.lease_us = int(lease * 1_000_000)
        self._enter = client.register_script(_lua("enter"))
        self._renew = client.register_script(_lua("renew"))

    @staticmethod
    def keys(who: str) -> list[str]:
        """The rate and inflight keys of client *who* (one hash tag)."""
        return [f"sc:api:rate:{{{who}}}", f"sc:api:inflight:{{{who}}}"]

    async def enter(self, who: str, request_id: str) -> Verdict:
        """Admit a request of *who*: when admitted with a concurrency limit, it holds a slot
        under *request_id* until :meth:`leave`."""
        verdict, n, retry_us = await self._enter(self.keys(who), [
            self.interval_us, self.rate_limit, self.concurrency, self.lease_us, request_id])
        if verdict == _RATE:
            return Verdict("RATE_LIMITED", retry_after=int(retry_us) / 1_000_000)
        if verdict == _BUSY:
            return Verdict("CONCURRENCY_LIMITED", in_flight=int(n), retry_after=1.0)
        return Verdict(None, left=int(n))

    async def renew(self, who: str, request_id: str) -> None:
        await self._renew(self.keys(who)[1:], [self.lease_us, request_id])

    async def leave(self, who: str, request_id: str) -> None:
        await self.client.zrem(self.keys(who)[1], request_id)


def limits_client(url: str) -> Redis:
    """The limiter's own client: short timeouts, so a hung Redis costs a request 2 s, once."""
    client: Redis = redis_from_url(url, socket_connect_timeout=2, socket_timeout=2,
                                   health_check_interval=30, client_name="statecrawl:api-limits")
    return client


class Limits:
    """ASGI middleware: 429 past a client's rate or concurrency limit (both 0: a no-op)."""

    def __init__(self, app: ASGIApp, *, redis_url: str, rate_limit: int = 0,
                 concurrency: int = 0, keyed: bool = False, lease: float = LEASE) -> None:
        self.app, self.keyed, self.lease = app, keyed, lease
        self.limiter = Limiter(limits_client(redis_url), rate_limit=rate_limit,
                               concurrency=concurrency, lease=lease) \
            if rate_limit or concurrency else None
        self._open_until = 0.0  # monotonic: no Redis until then (fail open)
        self._warned = -math.inf

    def who(self, scope: Scope) -> str:
        """``key-<hash>`` (API keys: ApiKeys let the request in) or ``addr-<address>``."""
        if self.keyed:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            token = header.strip().partition(b" ")[2].strip()
            return "key-" + hashlib.sha256(token).hexdigest()[:16]
        client = scope.get("client")
        return f"addr-{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        if (limiter is None or scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS
                or is_open(scope)):
            try:
                await self.app(scope, receive, send)
            finally:
                if limiter is not None and scope["type"] == "lifespan":  # the app has stopped
                    await limiter.client.aclose()
            return
        who, request_id = self.who(scope), secrets.token_hex(8)
        verdict = await self._enter(limiter, who, request_id)
        if verdict is not None and verdict.code is not None:
            await self._refuse(limiter, verdict)(scope, receive, send)
            return
        headers = [] if verdict is None or not limiter.rate_limit else [
            (b"x-ratelimit-limit", b"%d" % limiter.rate_limit),
            (b"x-ratelimit-remaining", b"%d" % verdict.left)]
        held = verdict is not None and limiter.concurrency > 0
        keeper = asyncio.create_task(self._keep(limiter, who, request_id)) if held else None

        async def leave() -> None:
            nonlocal keeper
            if keeper is not None:
                keeper.cancel()
                keeper = None
                with contextlib.suppress(RedisError, OSError):  # the lease ends it anyway
                    await limiter.leave(who, request_id)

        async def send_limited(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await leave()  # before the last byte: the client's next request finds the slot
            await send(message)

        try:
            await self.app(scope, receive, send_limited if headers or held else send)
        finally:
            await leave()

    def _refuse(self, limiter: Limiter, verdict: Verdict) -> ASGIApp:
        retry = max(1, math.ceil(verdict.retry_after))
        if verdict.code == "RATE_LIMITED":
            response = error(429, f"Rate limit exceeded. Consumed (req/min): {limiter.rate_limit}, "
                                  f"Remaining (req/min): 0. Please retry after {retry}s "
                                  "(STATECRAWL_API_RATE_LIMIT)", code=verdict.code)
            response.headers["X-RateLimit-Limit"] = str(limiter.rate_limit)
            response.headers["X-RateLimit-Remaining"] = "0"
        else:
            response = error(429, f"Concurrency limit exceeded: {verdict.in_flight} requests are "
                                  "already in flight (STATECRAWL_API_CONCURRENCY); retry when one "
                                  "has ended", code=verdict.code)
        response.headers["Retry-After"] = str(retry)
        return response

    async def _enter(self, limiter: Limiter, who: str, request_id: str) -> Verdict | None:
        """The verdict, or None when Redis failed (the request goes through: fail open)."""
        if time.monotonic() < self._open_until:
            return None
        try:
            return await limiter.enter(who, request_id)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None

    async def _keep(self, limiter: Limiter, who: str, request_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await limiter.renew(who, request_id)
            except (RedisError, OSError) as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._open_until = now + OPEN_FOR
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            logger.warning("API rate and concurrency limits not enforced for %g s: Redis error: "
                           "%s (requests are let through)", OPEN_FOR, exc)
