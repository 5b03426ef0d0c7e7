"""Requests and items as plain JSON, for the shared store.

Everything statecrawl keeps in Redis is JSON built from ``dict``, ``list``,
``str``, ``int``, ``float``, ``bool`` and ``None``. Reading it back never
imports a module or calls anything named in the data: the request class comes
from a fixed allow-list, callbacks are looked up as *methods of the running
spider* by name, and private or dunder names are refused (except the few
private callbacks Scrapy's own ``CrawlSpider`` and ``SitemapSpider`` build,
on spiders of those classes). That is the difference from pickle
(scrapy-redis' default), where anyone who can write to Redis runs code on
every worker. The plain JSON itself -- :func:`dumps` and :func:`loads`,
re-exported here -- is :mod:`statecrawl.frontier.plainjson`.

Writing and reading apply the same checks (:mod:`statecrawl.frontier._request_schema`):
a request that cannot be stored raises :class:`SerializationError` naming the
offending field when the spider yields it (the scheduler logs and counts it,
never drops it silently), and one read back from Redis either passes them --
and the worker's :class:`~statecrawl.frontier.scope.FetchScope` -- or raises
:class:`SerializationError`, never anything else (the scheduler quarantines
it).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http import FormRequest, JsonRequest, XmlRpcRequest
from scrapy.http.request import NO_CALLBACK
from w3lib.url import safe_url_string

from statecrawl.exceptions import SerializationError
from statecrawl.frontier._request_schema import (
    WORKER_ONLY_META,
    check_cookies,
    check_encoding,
    check_headers,
    check_meta,
    check_method,
    check_priority,
    check_url,
    json_type,
)
from statecrawl.frontier.plainjson import check_plain, dumps, loads

if TYPE_CHECKING:
    from scrapy import Spider

    from statecrawl.frontier.scope import UrlScope

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_REQUEST_BYTES",
    "PRIVATE_META_PREFIX",
    "SCRAPY_PRIVATE_CALLBACKS",
    "dumps",
    "get_request_json",
    "json_type",
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
    # scrapy-playwright's per-render objects and results; statecrawl.render.middleware
    # rebuilds the page methods from the JSON options on whichever worker renders
    "playwright_page", "playwright_page_methods", "playwright_security_details",
    "playwright_suggested_filename", "statecrawl_settle",
    # set by statecrawl.render.middleware on the worker (also WORKER_ONLY_META: never read)
    "playwright_page_init_callback",
})

_REQUEST_CLASSES: dict[str, type[Request]] = {
    "Request": Request,
    "FormRequest": FormRequest,
    "JsonRequest": JsonRequest,
    "XmlRpcRequest": XmlRpcRequest,
}
_FORMAT = 1
#: The largest request JSON stored or read back.
MAX_REQUEST_BYTES = 1024 * 1024


def _scrapy_private_callbacks() -> tuple[tuple[type, frozenset[str]], ...]:
    from scrapy.spiders import CrawlSpider, SitemapSpider

    return (
        (CrawlSpider, frozenset({"_callback", "_errback", "_parse"})),
        (SitemapSpider, frozenset({"_parse_sitemap"})),
    )


#: Private methods that Scrapy's own spider classes use as callbacks of the
#: requests they build (``CrawlSpider`` rules, ``SitemapSpider``). Only these
#: private names are stored and resolved, and only on spiders of those classes.
SCRAPY_PRIVATE_CALLBACKS = _scrapy_private_callbacks()


def _resolvable(spider: Spider, name: str) -> bool:
    """May *name* be stored as a callback of *spider*, and resolved when read back?"""
    if not name.isidentifier():
        return False
    if not name.startswith("_"):
        return True
    return any(isinstance(spider, cls) and name in names for cls, names in SCRAPY_PRIVATE_CALLBACKS)


def _method_name(spider: Spider | None, func: Any, field: str) -> str | None:
    if func is None:
        return None
    if func is NO_CALLBACK:
        return "NO_CALLBACK"
    name = getattr(func, "__name__", None)
    owner = getattr(func, "__self__", None)
    if spider is None or owner is not spider or not name or getattr(spider, name, None) != func:
        raise SerializationError(
            f"request.{field}: {func!r} is not a method of the spider; only spider "
            "methods can be stored (they are looked up by name on the worker)"
        )
    assert spider is not None
    if not _resolvable(spider, name):
        raise SerializationError(
            f"request.{field}: {name!r} is a private method; only public spider methods "
            "(and the ones Scrapy's CrawlSpider and SitemapSpider make) can be stored"
        )
    return str(name)


_warned_worker_only: set[str] = set()


def _stored_meta(request_meta: dict[str, Any]) -> dict[str, Any]:
    meta = {}
    for key, value in request_meta.items():
        if key.startswith(PRIVATE_META_PREFIX) or key in _TRANSIENT_META:
            continue
        if key in WORKER_ONLY_META:
            if key not in _warned_worker_only:
                _warned_worker_only.add(key)
                logger.warning(
                    "statecrawl: meta[%r] is not stored in the frontier: a worker takes proxies, "
                    "bind addresses and browser contexts only from its own settings "
                    "(STATECRAWL_PROXIES, sessions); see the README", key)
            continue
        meta[key] = value
    return meta


#: The fields of a stored request left out of its *compact* JSON when they hold these.
_DEFAULTS: dict[str, Any] = {
    "method": "GET", "cls": "Request", "callback": None, "errback": None, "headers": {},
    "priority": 0, "dont_filter": False, "encoding": "utf-8", "flags": [], "meta": {},
    "cb_kwargs": {},
}


def request_to_json(request: Request, spider: Spider | None, *, compact: bool = False) -> bytes:
    """Serialize *request*; raise SerializationError if any part cannot be stored.

    What is refused here is what :func:`request_from_json` would refuse when
    reading it back, so a request is refused before the dupefilter sees it.
    *compact* leaves out ``v`` and every field equal to its default (what
    :mod:`statecrawl.frontier.packing` stores; it reads back the same).
    """
    cls_name = type(request).__name__
    if _REQUEST_CLASSES.get(cls_name) is not type(request):
        raise SerializationError(
            f"request class {type(request).__module__}.{cls_name} is not one of "
            f"{sorted(_REQUEST_CLASSES)}; subclasses cannot be stored safely"
        )
    doc: dict[str, Any] = {
        "v": _FORMAT,
        "url": check_url(request.url),
        "method": check_method(request.method),
        "cls": cls_name,
        "callback": _method_name(spider, request.callback, "callback"),
        "errback": _method_name(spider, request.errback, "errback"),
        "headers": check_headers({
            k.decode("latin-1"): [v.decode("latin-1") for v in vs]
            for k, vs in request.headers.items()
        }),
        "priority": check_priority(request.priority),
        "dont_filter": request.dont_filter,
        "encoding": request.encoding,
        "flags": list(request.flags),
        "meta": _stored_meta(request.meta),
        "cb_kwargs": request.cb_kwargs,
    }
    if request.body:
        doc["body"] = base64.b64encode(request.body).decode()
    if request.cookies:
        doc["cookies"] = request.cookies
    check_plain(doc, "request")
    check_meta(doc["meta"])
    check_cookies(doc.get("cookies"))
    if compact:
        doc = {k: v for k, v in doc.items() if k != "v" and _DEFAULTS.get(k, doc) != v}
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_REQUEST_BYTES:
        raise SerializationError(f"request: {len(body)} bytes as JSON, over {MAX_REQUEST_BYTES}")
    return body


#: Spider attribute: {name: bound method} of the callbacks resolved so far. Handing Scrapy
#: the same bound method for every request matters: Scrapy checks each callback for a
#: generator ``return value`` by parsing its source (``is_generator_with_return_value``),
#: cached only while that very method object lives -- a fresh one per request re-parsed it
#: every time (~1.5 ms a page). Kept on the spider, so it goes with it.
_BOUND_ATTR = "_statecrawl_callbacks"


def get_request_json(url: str, *, callback: str | None, errback: str | None,
                     meta: dict[str, Any] | None = None, priority: int = 0,
                     dont_filter: bool = False) -> bytes:
    """What :func:`request_to_json` stores for ``Request(url, meta=meta, priority=priority,
    dont_filter=dont_filter)`` whose callback and errback are the spider methods named
    *callback* and *errback*, built without the Request (an API process enqueues one per
    scrape, for a spider it does not run: the names are checked by the worker that reads
    it back). Raises SerializationError as :func:`request_to_json` does."""
    if not isinstance(url, str):
        raise SerializationError(f"request.url: expected a string, got {json_type(url)}")
    meta = dict(meta or {})
    if not meta.get("verbatim_url"):  # as Request._set_url does
        url = safe_url_string(url, "utf-8")
    doc: dict[str, Any] = {
        "v": _FORMAT, "url": check_url(url), "method": "GET", "cls": "Request",
        "callback": callback, "errback": errback, "headers": {},
        "priority": check_priority(priority), "dont_filter": dont_filter, "encoding": "utf-8",
        "flags": [], "meta": _stored_meta(meta), "cb_kwargs": {},
    }
    body = dumps(doc, "request")
    check_meta(doc["meta"])
    if len(body) > MAX_REQUEST_BYTES:
        raise SerializationError(f"request: {len(body)} bytes as JSON, over {MAX_REQUEST_BYTES}")
    return body


def _spider_method(spider: Spider | None, name: Any, field: str) -> Any:
    if name is None:
        return None
    if name == "NO_CALLBACK":
        return NO_CALLBACK
    if spider is None:
        raise SerializationError(f"request.{field}: {str(name)[:60]!r} needs a spider to resolve")
    if not isinstance(name, str) or not _resolvable(spider, name):
        raise SerializationError(f"request.{field}: {str(name)[:60]!r} is not a public method name")
    bound: dict[str, Any] | None = spider.__dict__.get(_BOUND_ATTR)
    if bound is None:
        bound = {}
        setattr(spider, _BOUND_ATTR, bound)
    method = bound.get(name)
    if method is None:
        method = getattr(spider, name, None)
        if not callable(method) or getattr(method, "__self__", None) is not spider:
            raise SerializationError(f"request.{field}: spider {spider.name!r} has no method {name!r}")
        bound[name] = method
    return method


def _field(doc: dict[str, Any], name: str, types: tuple[type, ...], default: Any) -> Any:
    value = doc.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise SerializationError(f"request.{name}: expected {' or '.join(t.__name__ for t in types)}")
    return value


def _check_rule(spider: Spider | None, callback: Any, meta: dict[str, Any]) -> None:
    """A CrawlSpider rule callback needs ``meta["rule"]`` to name one of the spider's rules."""
    name = getattr(callback, "__name__", None)
    if name in ("_callback", "_errback"):
        rules = getattr(spider, "_rules", None) or ()
        rule = meta.get("rule")
        if not isinstance(rule, int) or isinstance(rule, bool) or not 0 <= rule < len(rules):
            raise SerializationError(f"request.meta.rule: {rule!r} is not one of the spider's "
                                     f"{len(rules)} rules")


def request_from_json(
    raw: bytes | str, spider: Spider | None, scope: UrlScope | None = None,
) -> Request:
    """Rebuild a request, or raise SerializationError (and nothing else).

    Nothing named in *raw* is imported or called; every field is checked
    (:mod:`statecrawl.frontier._request_schema`). With *scope*, a request whose URL the
    scope does not admit is refused, whatever its ``dont_filter`` or
    ``allow_offsite`` say.
    """
    try:
        return _build(raw, spider, scope)
    except SerializationError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Scrapy refuses is malformed data
        raise SerializationError(f"request: stored data is malformed: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _build(raw: bytes | str, spider: Spider | None, scope: UrlScope | None) -> Request:
    if len(raw) > MAX_REQUEST_BYTES:
        raise SerializationError(f"request: {len(raw)} bytes, over {MAX_REQUEST_BYTES}")
    doc = loads(raw, "request")
    # compact JSON (statecrawl.frontier.packing) has no "v"; full JSON has "v": 1
    if not isinstance(doc, dict) or doc.get("v", _FORMAT) != _FORMAT:
        raise SerializationError("request: unknown stored format")
    cls_name = doc.get("cls", "Request")
    cls = _REQUEST_CLASSES.get(cls_name) if isinstance(cls_name, str) else None
    if cls is None:
        raise SerializationError(f"request: class {str(doc.get('cls'))[:60]!r} is not allowed")
    url = check_url(doc.get("url"))
    if scope is not None and not scope.allows(url):
        raise SerializationError(f"request.url: {url[:200]} is outside the crawl's scope")
    body_b64 = _field(doc, "body", (str,), "")
    meta = check_meta(doc.get("meta"))
    callback = _spider_method(spider, doc.get("callback"), "callback")
    errback = _spider_method(spider, doc.get("errback"), "errback")
    _check_rule(spider, callback, meta)
    flags = _field(doc, "flags", (list,), [])
    if not all(isinstance(f, str) for f in flags):
        raise SerializationError("request.flags: expected strings")
    return cls(
        url=url,
        method=check_method(doc.get("method", "GET")),
        callback=callback,
        errback=errback,
        headers=check_headers(doc.get("headers")) or None,
        body=base64.b64decode(body_b64, validate=True) if body_b64 else b"",
        cookies=check_cookies(doc.get("cookies")),  # type: ignore[arg-type]
        meta=meta or None,
        encoding=check_encoding(doc.get("encoding", "utf-8")),
        priority=check_priority(doc.get("priority", 0)),
        dont_filter=_field(doc, "dont_filter", (bool,), False),
        flags=flags,
        cb_kwargs=_field(doc, "cb_kwargs", (dict,), None) or None,
    )
