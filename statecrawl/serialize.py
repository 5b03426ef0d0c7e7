"""Requests and items as plain JSON, for the shared store.

Everything statecrawl keeps in Redis is JSON built from ``dict``, ``list``,
``str``, ``int``, ``float``, ``bool`` and ``None``. Reading it back never
imports a module or calls anything named in the data: the request class comes
from a fixed allow-list, callbacks are looked up as *methods of the running
spider* by name, and names that are private or dunder are refused. That is the
difference from pickle (scrapy-redis' default), where anyone who can write to
Redis runs code on every worker.

A request that cannot be written as JSON raises :class:`SerializationError`
naming the offending field; the scheduler turns that into an error log line and
a stat, never a silent drop.
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http import FormRequest, JsonRequest, XmlRpcRequest
from scrapy.http.request import NO_CALLBACK

from statecrawl.exceptions import SerializationError

if TYPE_CHECKING:
    from scrapy import Spider

__all__ = [
    "PRIVATE_META_PREFIX",
    "dumps",
    "loads",
    "request_from_json",
    "request_to_json",
]

#: Meta keys starting with this prefix are worker-local bookkeeping (the lease
#: id, for instance) and are never written to the store.
PRIVATE_META_PREFIX = "_statecrawl"

#: Meta keys Scrapy sets per download attempt; they describe one worker's
#: fetch, not the request, so they are not carried into the store.
_TRANSIENT_META = frozenset({
    "download_latency", "download_slot", "_slot_key",
    # scrapy-playwright's per-render objects and results; statecrawl.render
    # rebuilds the page methods from the JSON options on whichever worker renders
    "playwright_page", "playwright_page_methods", "playwright_security_details",
    "playwright_suggested_filename",
})

_REQUEST_CLASSES: dict[str, type[Request]] = {
    "Request": Request,
    "FormRequest": FormRequest,
    "JsonRequest": JsonRequest,
    "XmlRpcRequest": XmlRpcRequest,
}
_FORMAT = 1
_MAX_DEPTH = 64


def _check_plain(value: Any, path: str, depth: int = 0) -> None:
    """Raise unless *value* is plain JSON data (no NaN, str keys only)."""
    if depth > _MAX_DEPTH:
        raise SerializationError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"{path}: {value!r} is not valid JSON")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{path}: key {k!r} is not a string")
            _check_plain(v, f"{path}.{k}", depth + 1)
        return
    raise SerializationError(
        f"{path}: {type(value).__name__} is not plain JSON data "
        "(use str, int, float, bool, None, list or dict)"
    )


def dumps(value: Any, what: str = "value") -> bytes:
    """Encode plain JSON data compactly; raise SerializationError otherwise."""
    _check_plain(value, what)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: bytes | str, what: str = "value") -> Any:
    """Decode JSON read from the store. Only JSON types can come out."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError(f"{what}: stored data is not valid JSON: {exc}") from None


def _method_name(spider: Spider | None, func: Any, field: str) -> str | None:
    if func is None:
        return None
    if func is NO_CALLBACK:
        return "NO_CALLBACK"
    name = getattr(func, "__name__", None)
    owner = getattr(func, "__self__", None)
    if spider is not None and owner is spider and name and getattr(spider, name, None) == func:
        return name
    raise SerializationError(
        f"request.{field}: {func!r} is not a method of the spider; only spider "
        "methods can be stored (they are looked up by name on the worker)"
    )


def request_to_json(request: Request, spider: Spider | None) -> bytes:
    """Serialize *request*; raise SerializationError if any part is not JSON."""
    cls_name = type(request).__name__
    if _REQUEST_CLASSES.get(cls_name) is not type(request):
        raise SerializationError(
            f"request class {type(request).__module__}.{cls_name} is not one of "
            f"{sorted(_REQUEST_CLASSES)}; subclasses cannot be stored safely"
        )
    meta = {
        k: v
        for k, v in request.meta.items()
        if not k.startswith(PRIVATE_META_PREFIX) and k not in _TRANSIENT_META
    }
    doc: dict[str, Any] = {
        "v": _FORMAT,
        "url": request.url,
        "method": request.method,
        "cls": cls_name,
        "callback": _method_name(spider, request.callback, "callback"),
        "errback": _method_name(spider, request.errback, "errback"),
        "headers": {
            k.decode("latin-1"): [v.decode("latin-1") for v in vs]
            for k, vs in request.headers.items()
        },
        "priority": request.priority,
        "dont_filter": request.dont_filter,
        "encoding": request.encoding,
        "flags": list(request.flags),
        "meta": meta,
        "cb_kwargs": request.cb_kwargs,
    }
    if request.body:
        doc["body"] = base64.b64encode(request.body).decode()
    if request.cookies:
        doc["cookies"] = request.cookies
    return dumps(doc, "request")


def _spider_method(spider: Spider | None, name: Any, field: str) -> Any:
    if name is None:
        return None
    if name == "NO_CALLBACK":
        return NO_CALLBACK
    if spider is None:
        raise SerializationError(f"request.{field}: {name!r} needs a spider to resolve")
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise SerializationError(f"request.{field}: {name!r} is not a public method name")
    method = getattr(spider, name, None)
    if not callable(method) or getattr(method, "__self__", None) is not spider:
        raise SerializationError(f"request.{field}: spider {spider.name!r} has no method {name!r}")
    return method


def request_from_json(raw: bytes | str, spider: Spider | None) -> Request:
    """Rebuild a request. Nothing named in *raw* is imported or called."""
    doc = loads(raw, "request")
    if not isinstance(doc, dict) or doc.get("v") != _FORMAT:
        raise SerializationError("request: unknown stored format")
    cls_name = doc.get("cls", "Request")
    cls = _REQUEST_CLASSES.get(cls_name) if isinstance(cls_name, str) else None
    if cls is None:
        raise SerializationError(f"request: class {doc.get('cls')!r} is not allowed")
    try:
        body = base64.b64decode(doc["body"], validate=True) if doc.get("body") else b""
        return cls(
            url=doc["url"],
            method=doc.get("method", "GET"),
            callback=_spider_method(spider, doc.get("callback"), "callback"),
            errback=_spider_method(spider, doc.get("errback"), "errback"),
            headers=doc.get("headers") or None,
            body=body,
            cookies=doc.get("cookies"),
            meta=doc.get("meta") or None,
            encoding=doc.get("encoding", "utf-8"),
            priority=int(doc.get("priority", 0)),
            dont_filter=bool(doc.get("dont_filter", False)),
            flags=doc.get("flags"),
            cb_kwargs=doc.get("cb_kwargs") or None,
        )
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SerializationError(f"request: stored data is malformed: {exc}") from None
