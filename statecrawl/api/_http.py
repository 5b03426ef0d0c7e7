"""The HTTP plumbing of the API app: API keys, body limits, and every error as JSON.

* :class:`ApiKeys` -- ASGI middleware: with keys configured, every path but
  :data:`OPEN_PATHS`, the live page's shells (:func:`is_open`) and the ``open_paths`` it
  is given (``/metrics`` when the operator opens it) needs ``Authorization: Bearer <key>``;
  keys are compared
  in constant time (SHA-256 of both sides, then :func:`hmac.compare_digest`,
  so not even a key's length leaks). Runs before any body is read.
* :func:`read_json` -- the request body, at most ``max_body`` bytes (413
  past that, counted while streaming, never trusting ``Content-Length``),
  parsed as JSON (400 when it is not).
* :data:`EXCEPTION_HANDLERS` -- Starlette's 404/405, Redis errors (503) and
  anything unexpected (500) answer ``{success: false, error, ...}``, never an
  HTML or plain-text page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_BODY", "EXCEPTION_HANDLERS", "METRICS_PATH", "OPEN_PATHS", "UNLIMITED_PATHS",
    "ApiKeys", "BodyError", "bad_request",
    "error", "is_open", "parse_api_keys", "parse_max_body", "read_json",
]

logger = logging.getLogger("statecrawl.api")

DEFAULT_MAX_BODY = 1024 * 1024  #: bytes; the STATECRAWL_API_MAX_BODY setting
OPEN_PATHS = frozenset({"/openapi.json"})  #: paths that need no API key
METRICS_PATH = "/metrics"  #: Prometheus' scrape path (:mod:`statecrawl.api.metrics`)
#: paths the rate and concurrency limits never count (:mod:`statecrawl.api.limits`)
UNLIMITED_PATHS = OPEN_PATHS | {METRICS_PATH}
#: GET paths that need no API key either: the live page's HTML shells and static files
#: (:mod:`statecrawl.api.live`), which hold no crawl data -- a browser cannot send a Bearer
#: header when it navigates; the page asks for the key and sends it on its data requests.
_OPEN_PAGES = re.compile(r"/crawls(?:/[^/]+)?|/static/live/[^/]+")
DRAIN = 16  #: a body past the limit is read (and dropped) up to this many times the limit


def error(http_status: int, message: str, /, **extra: Any) -> JSONResponse:
    """``{success: false, error: message, **extra}`` with status *http_status*."""
    return JSONResponse({"success": False, "error": message, **extra}, status_code=http_status)


def bad_request(details: list[dict[str, Any]]) -> JSONResponse:
    """A 400 shaped as :func:`statecrawl.api.models.bad_request_body`'s."""
    return JSONResponse({"success": False, "code": "BAD_REQUEST", "error": "Bad Request",
                         "details": details}, status_code=400)


def parse_api_keys(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The keys of STATECRAWL_API_KEYS (comma-separated) or of repeated --api-key options."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    return tuple(dict.fromkeys(k.strip() for k in items if k.strip()))


def parse_max_body(value: str | int | None) -> int:
    """STATECRAWL_API_MAX_BODY in bytes (None or '': 1 MiB); raises ValueError when not a positive int."""
    if value is None or value == "":
        return DEFAULT_MAX_BODY
    size = int(value)
    if size < 1:
        raise ValueError(f"not a positive size: {value!r}")
    return size


def is_open(scope: Scope) -> bool:
    """Whether the request of *scope* needs no API key (nor counts against a limit)."""
    return scope["path"] in OPEN_PATHS or (
        scope.get("method") in ("GET", "HEAD") and _OPEN_PAGES.fullmatch(scope["path"]) is not None)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeys:
    """ASGI middleware: 401 ``{success: false, error: "Unauthorized"}`` without a valid key."""

    def __init__(self, app: ASGIApp, keys: Iterable[str] = (), open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.digests = [_digest(k.encode()) for k in keys]
        self.open_paths = OPEN_PATHS | frozenset(open_paths)

    def allowed(self, header: bytes | None) -> bool:
        scheme, _, token = (header or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = _digest(token.strip())
        ok = False
        for digest in self.digests:  # no early exit: every key is compared every time
            ok |= hmac.compare_digest(given, digest)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.digests or scope["path"] in self.open_paths
                or is_open(scope)):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        response = error(401, "Unauthorized")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class BodyError(Exception):
    """A body that is too large (413) or not JSON (400); carries its response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _too_large(limit: int) -> BodyError:
    return BodyError(error(413, f"the request body is larger than {limit} bytes "
                                "(STATECRAWL_API_MAX_BODY)", code="PAYLOAD_TOO_LARGE"))


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body of *request*, at most *limit* bytes; raises :class:`BodyError`.

    A body past the limit is read to its end and dropped (up to :data:`DRAIN` times the
    limit) before the 413 goes out: a client still sending when the server closes gets a
    connection reset, not the 413 (Express's body-parser drains too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit * DRAIN:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise _too_large(limit)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = "the body is empty" if not raw.strip() else f"the body is not valid JSON: {exc}"
        raise BodyError(bad_request([{"code": "json_invalid", "path": [], "message": why}])) from None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages: Mapping[int, str] = {404: "Not found", 405: "Method not allowed"}
    response = error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _body_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyError)
    return exc.response


async def _redis_error(request: Request, exc: Exception) -> Response:
    logger.warning("Redis error on %s %s: %s", request.method, request.url.path, exc)
    return error(503, "the job store (Redis) is unavailable; try again shortly",
                 code="REDIS_UNAVAILABLE")


async def _internal(request: Request, exc: Exception) -> Response:
    return error(500, "internal server error", code="INTERNAL")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http_error,
    BodyError: _body_error,
    RedisError: _redis_error,
    ConnectionError: _redis_error,  # a socket error redis-py did not wrap
    Exception: _internal,  # ServerErrorMiddleware: sent, then logged with its traceback
}
