"""What a stored request may contain: the checks behind :func:`statecrawl.frontier.serialize.request_from_json`.

A stored request is read from Redis, which anyone who can write to it can
change. So every field is checked for its type and range *before* anything is
built from it, and a value that does not fit is a
:class:`~statecrawl.exceptions.SerializationError` naming the field (the
scheduler quarantines the request). The checks are the contract of the
writer (:func:`statecrawl.frontier.serialize.request_to_json`), which refuses the same
values when a spider yields them, so nothing admitted to the dupefilter is
refused when it is read back.

Some meta keys are **worker-local**: they choose how a worker reaches the
network (``proxy``, ``bindaddress``, a browser context and its options), so
they come only from the worker's own settings and middlewares, never from the
frontier. So are scrapy-playwright's page hooks, which name code for a worker
to run (``playwright_page_init_callback``, an import path;
``playwright_page_event_handlers``, spider methods): code a worker runs never
comes from Redis. They are dropped when a request is stored and ignored when
one is read (:data:`WORKER_ONLY_META`); so is a ``Proxy-Authorization`` header.
"""

from __future__ import annotations

import codecs
import math
import re
from typing import Any

from statecrawl.exceptions import SerializationError

__all__ = [
    "MAX_PRIORITY", "MAX_URL_LENGTH", "json_type", "WORKER_ONLY_HEADERS", "WORKER_ONLY_META", "check_cookies",
    "check_encoding", "check_headers", "check_meta", "check_priority", "check_url",
]

#: Meta keys a stored request never carries (see the module docstring).
WORKER_ONLY_META = frozenset({
    "proxy", "_auth_proxy", "bindaddress", "playwright_context", "playwright_context_kwargs",
    "playwright_page_init_callback", "playwright_page_event_handlers",
})
#: Headers a stored request never carries (lower case).
WORKER_ONLY_HEADERS = frozenset({"proxy-authorization"})

MAX_URL_LENGTH = 32 * 1024
#: A priority is a ZSET score, a double: beyond 2**53 it loses precision.
MAX_PRIORITY = 2**53
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")
_METHOD = re.compile(r"[A-Za-z]{1,20}")

#: Meta keys Scrapy's components (and statecrawl's) read, with the JSON types
#: they must hold; a wrong type would fail the request later, far from its cause.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "depth": (int,), "retry_times": (int,), "max_retry_times": (int,), "redirect_times": (int,),
    "download_timeout": (int, float), "download_maxsize": (int,), "download_warnsize": (int,),
    "dont_redirect": (bool,), "dont_retry": (bool,), "dont_merge_cookies": (bool,),
    "dont_obey_robotstxt": (bool,), "dont_cache": (bool,), "handle_httpstatus_all": (bool,),
    "handle_httpstatus_list": (list,), "redirect_urls": (list,), "redirect_reasons": (list,),
    "is_start_request": (bool,), "allow_offsite": (bool,), "cookiejar": (str, int),
    "rule": (int,), "link_text": (str,), "playwright": (bool,),
    "playwright_page_goto_kwargs": (dict,), "statecrawl_render": (str,),
    "statecrawl_render_options": (dict,), "statecrawl_aux": (bool,),
}


def json_type(value: Any) -> str:
    """The JSON-ish name of *value*'s type, for error messages (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def check_url(url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise SerializationError(f"request.url: expected a non-empty string, got {json_type(url)}")
    if len(url) > MAX_URL_LENGTH:
        raise SerializationError(f"request.url: {len(url)} characters, over {MAX_URL_LENGTH}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise SerializationError(f"request.url: {url[:100]!r} is not an http(s) URL; statecrawl "
                                 "stores only http and https requests")
    return url


def check_method(method: Any) -> str:
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise SerializationError(f"request.method: {str(method)[:40]!r} is not an HTTP method")
    return method


def check_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise SerializationError(f"request.priority: expected an integer, got {json_type(priority)}")
    if abs(priority) > MAX_PRIORITY:
        raise SerializationError(f"request.priority: {priority} is beyond +-2**53")
    return priority


def check_encoding(encoding: Any) -> str:
    if not isinstance(encoding, str) or not encoding or len(encoding) > 64:
        raise SerializationError(f"request.encoding: {str(encoding)[:40]!r} is not an encoding name")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SerializationError(f"request.encoding: unknown encoding {encoding[:40]!r}") from None
    return encoding


def check_headers(headers: Any) -> dict[str, list[str]]:
    """``{name: [value, ...]}`` with valid names and no CR/LF/NUL; worker-only headers dropped."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise SerializationError(f"request.headers: expected an object, got {json_type(headers)}")
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise SerializationError(f"request.headers: {name[:40]!r} is not a header name")
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SerializationError(f"request.headers.{name}: expected strings")
        if any(_BAD_HEADER_VALUE.search(v) for v in values):
            raise SerializationError(f"request.headers.{name}: a value holds CR, LF or NUL")
        if name.lower() not in WORKER_ONLY_HEADERS:
            out[name] = values
    return out


def _cookie_value(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SerializationError(f"{where}: expected a string or number, got {json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SerializationError(f"{where}: {value} is not a cookie value")


def check_cookies(cookies: Any) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Scrapy's two cookie shapes: ``{name: value}`` or ``[{"name", "value", ...}]``."""
    if cookies is None:
        return None
    if isinstance(cookies, dict):
        for name, value in cookies.items():
            _cookie_value(value, f"request.cookies.{name}")
        return cookies
    if not isinstance(cookies, list):
        raise SerializationError(f"request.cookies: expected an object or a list, got "
                                 f"{json_type(cookies)}")
    for i, cookie in enumerate(cookies):
        where = f"request.cookies[{i}]"
        if not isinstance(cookie, dict) or not isinstance(cookie.get("name"), str):
            raise SerializationError(f"{where}: expected an object with a string name")
        _cookie_value(cookie.get("value"), f"{where}.value")
        for key in ("domain", "path"):
            if key in cookie and not isinstance(cookie[key], str):
                raise SerializationError(f"{where}.{key}: expected a string")
        if "secure" in cookie and not isinstance(cookie["secure"], bool):
            raise SerializationError(f"{where}.secure: expected true or false")
    return cookies


def check_meta(meta: Any) -> dict[str, Any]:
    """The stored meta, worker-only keys dropped, known keys type-checked."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise SerializationError(f"request.meta: expected an object, got {json_type(meta)}")
    out = {}
    for key, value in meta.items():
        if key in WORKER_ONLY_META:
            continue
        types = _META_TYPES.get(key)
        if types is not None and (not isinstance(value, types) or
                                  (isinstance(value, bool) and bool not in types)):
            raise SerializationError(f"request.meta.{key}: expected "
                                     f"{' or '.join(t.__name__ for t in types)}, got {json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SerializationError(f"request.meta.{key}: {value} is not a finite number")
        out[key] = value
    return out
