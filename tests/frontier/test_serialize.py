"""Requests and items as plain JSON: round trips, refusals, and a fuzz of the reader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scrapy import Request, Spider
from scrapy.http import FormRequest, JsonRequest

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.scope import FetchScope, Scope
from statecrawl.frontier.serialize import (
    dumps,
    get_request_json,
    loads,
    request_from_json,
    request_to_json,
)


class DemoSpider(Spider):
    name = "demo"

    def parse(self, response):  # pragma: no cover - never called
        pass

    def on_error(self, failure):  # pragma: no cover
        pass

    def _private(self, response):  # pragma: no cover
        pass


SPIDER = DemoSpider()


def roundtrip(request: Request) -> Request:
    return request_from_json(request_to_json(request, SPIDER), SPIDER)


def test_request_round_trip_keeps_every_field() -> None:
    req = Request(
        "http://example.com/a?b=1", method="POST", body=b"\x00\xffbinary",
        headers={"X-Token": "abc", "Accept": ["a", "b"]}, cookies={"s": "1"},
        meta={"depth": 3, "nested": {"list": [1, 2.5, None, True]}}, priority=7,
        dont_filter=True, flags=["f"], cb_kwargs={"page": 2},
        callback=SPIDER.parse, errback=SPIDER.on_error,
    )
    out = roundtrip(req)
    assert (out.url, out.method, out.body, out.priority, out.dont_filter) == (
        req.url, "POST", b"\x00\xffbinary", 7, True)
    assert out.headers.getlist("Accept") == [b"a", b"b"]
    assert out.headers["X-Token"] == b"abc"
    assert out.meta == req.meta and out.cb_kwargs == {"page": 2} and out.flags == ["f"]
    assert out.cookies == {"s": "1"}
    assert out.callback == SPIDER.parse and out.errback == SPIDER.on_error


@pytest.mark.parametrize("cls", [FormRequest, JsonRequest])
def test_allowed_subclasses_round_trip(cls: type[Request]) -> None:
    req = cls("http://example.com/", method="POST", body=b'{"a":1}')
    out = roundtrip(req)
    assert type(out) is cls and out.body == b'{"a":1}'


def test_private_meta_keys_are_not_stored() -> None:
    req = Request("http://example.com/", meta={"_statecrawl_lease": "x", "download_slot": "s", "k": 1})
    assert json.loads(request_to_json(req, SPIDER))["meta"] == {"k": 1}


@pytest.mark.parametrize("bad, where", [
    ({"obj": object()}, "meta.obj"),
    ({"n": float("nan")}, "meta.n"),
    ({"k": {1: "int key"}}, "meta.k"),
    ({"b": b"bytes"}, "meta.b"),
])
def test_non_json_meta_is_an_error_naming_the_field(bad: dict, where: str) -> None:
    with pytest.raises(SerializationError, match=where.replace(".", r"\.")):
        request_to_json(Request("http://example.com/", meta=bad), SPIDER)


@pytest.mark.parametrize("url", [
    "https://e.com/a", "http://e.com", "HTTP://E.com/a b?q=é#frag", " https://e.com/x ",
    "https://bücher.example/pfad?x=1&y=%41", "http://e.com/%zz/[v]/\\/|"])
@pytest.mark.parametrize(("meta", "priority", "dont_filter"), [
    ({}, 0, True), ({"statecrawl_service": "r1", "opts": {"f": ["markdown"], "t": None}}, -5, False),
    ({"_statecrawl_lease": "x", "download_slot": "s", "depth": 2}, 7, True),
    ({"verbatim_url": True}, 0, True)])
def test_get_request_json_is_what_request_to_json_stores(
        url: str, meta: dict, priority: int, dont_filter: bool) -> None:
    request = Request(url, meta=meta, priority=priority, dont_filter=dont_filter)
    try:
        stored = loads(request_to_json(request, SPIDER), "request")
    except SerializationError:  # (a verbatim URL with spaces): refused by both
        with pytest.raises(SerializationError):
            get_request_json(url, callback="parse", errback=None, meta=meta)
        return
    stored["callback"], stored["errback"] = "parse", None
    assert get_request_json(url, callback="parse", errback=None, meta=meta, priority=priority,
                            dont_filter=dont_filter) == dumps(stored, "request")


@pytest.mark.parametrize(("url", "meta"), [
    ("ftp://e.com/", {}), ("https://e.com/" + "a" * 70_000, {}), ("https://e.com/", {"x": float("nan")}),
    ("https://e.com/", {"depth": "deep"})])
def test_get_request_json_refuses_what_request_to_json_does(url: str, meta: dict) -> None:
    with pytest.raises(SerializationError):
        request_to_json(Request(url, meta=meta), SPIDER)
    with pytest.raises(SerializationError):
        get_request_json(url, callback="parse", errback=None, meta=meta)


def test_callback_that_is_not_a_spider_method_is_refused() -> None:
    with pytest.raises(SerializationError, match="not a method of the spider"):
        request_to_json(Request("http://example.com/", callback=lambda r: None), SPIDER)


def test_request_subclass_is_refused() -> None:
    class MyRequest(Request):
        pass

    with pytest.raises(SerializationError, match="subclasses cannot be stored"):
        request_to_json(MyRequest("http://example.com/"), SPIDER)


def _stored(**over) -> bytes:
    doc = json.loads(request_to_json(Request("http://example.com/"), SPIDER))
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("over, message", [
    ({"cls": "os.system"}, "not allowed"),
    ({"cls": "scrapy.http.Request"}, "not allowed"),
    ({"callback": "__init__"}, "not a public method"),
    ({"callback": "_private"}, "not a public method"),
    ({"callback": "no_such_method"}, "has no method"),
    ({"callback": "name"}, "has no method"),  # an attribute, not a method
    ({"errback": "os.system"}, "not a public method"),
    ({"v": 99}, "unknown stored format"),
    ({"body": "!!not base64!!"}, "malformed"),
])
def test_reader_never_resolves_anything_outside_the_spider(over: dict, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        request_from_json(_stored(**over), SPIDER)


def test_pickle_and_garbage_are_rejected() -> None:
    import pickle

    for raw in (pickle.dumps({"url": "http://x/"}), b"\x80\x04garbage", b"", b"[1,2]"):
        with pytest.raises(SerializationError):
            request_from_json(raw, SPIDER)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_plain_json_round_trips(value: object) -> None:
    assert loads(dumps(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_reader_either_builds_a_request_or_raises_serialization_error(raw: bytes) -> None:
    try:
        out = request_from_json(raw, SPIDER)
    except SerializationError:
        return
    assert isinstance(out, Request)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["cls", "callback", "errback", "url", "meta", "headers", "priority", "body", "v"]),
    json_values, max_size=6))
def test_reader_on_any_stored_shape_only_uses_allow_listed_names(over: dict) -> None:
    try:
        out = request_from_json(_stored(**over), SPIDER)
    except SerializationError:
        return
    assert type(out) in (Request, FormRequest, JsonRequest) or type(out).__module__.startswith("scrapy.http")
    for cb in (out.callback, out.errback):
        assert cb is None or getattr(cb, "__self__", None) is SPIDER


# -- requests read back from Redis: inside the scope, or quarantined ---------------------------

SCOPE = FetchScope([Scope("http://example.com/").rule])
_FIELDS = ["v", "url", "method", "cls", "callback", "errback", "headers", "priority", "dont_filter",
           "encoding", "flags", "meta", "cb_kwargs", "body", "cookies"]
_urls = st.sampled_from([
    "http://example.com/a", "https://example.com:443/b", "http://example.com:8080/",
    "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "http://evil.test/",
    "data:text/html,x", "http://[::1]:80/", "http://example.com:99999/", "",
]) | st.text(max_size=40)
_any_json = json_values | st.just(1e308) | st.integers(min_value=-(2**70), max_value=2**70)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _any_json, max_size=8), _urls,
       st.dictionaries(st.sampled_from(["proxy", "depth", "cookiejar", "allow_offsite",
                                        "playwright_context_kwargs", "rule", "x",
                                        "playwright_page_init_callback",
                                        "playwright_page_event_handlers"]),
                       _any_json, max_size=4))
def test_decoder_rebuilds_inside_the_scope_or_quarantines(over: dict, url: str, meta: dict) -> None:
    raw = _stored(**{"url": url, "meta": meta, **over})
    try:
        out = request_from_json(raw, SPIDER, SCOPE)
    except SerializationError:
        return  # quarantined by the scheduler
    assert SCOPE.allows(out.url)
    assert out.url.startswith(("http://example.com", "https://example.com"))
    assert not {"proxy", "playwright_context_kwargs", "playwright_page_init_callback",
                "playwright_page_event_handlers"} & set(out.meta)
    assert b"Proxy-Authorization" not in out.headers
    for cb in (out.callback, out.errback):
        assert cb is None or getattr(cb, "__self__", None) is SPIDER


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_on_any_bytes_only_quarantines(raw: bytes) -> None:
    try:
        request_from_json(raw, SPIDER, SCOPE)
    except SerializationError:
        pass


def test_worker_only_meta_and_headers_are_never_stored() -> None:
    req = Request("http://example.com/", meta={"proxy": "http://p:1", "bindaddress": ["1.2.3.4", 0],
                                               "k": 1},
                  headers={"Proxy-Authorization": "Basic x", "X-A": "1"})
    doc = json.loads(request_to_json(req, SPIDER))
    assert doc["meta"] == {"k": 1}
    assert "Proxy-Authorization" not in doc["headers"] and doc["headers"]["X-A"] == ["1"]


def test_page_hooks_naming_code_are_never_stored_nor_read() -> None:
    """scrapy-playwright imports and calls ``playwright_page_init_callback``: not from Redis."""
    hooks = {"playwright_page_init_callback": "os.system",
             "playwright_page_event_handlers": {"load": "close"}}
    doc = json.loads(request_to_json(Request("http://example.com/", meta={**hooks, "k": 1}),
                                     SPIDER))
    assert doc["meta"] == {"k": 1}
    out = request_from_json(_stored(url="http://example.com/", meta={**hooks, "k": 1}), SPIDER,
                            SCOPE)
    assert out.meta == {"k": 1}


@pytest.mark.parametrize("request_, message", [
    (Request("data:text/html,x"), "http"),
    (Request("http://example.com/", priority=2**60), "priority"),
    (Request("http://example.com/", meta={"depth": "3"}), "meta.depth"),
])
def test_writer_refuses_what_the_reader_would(request_: Request, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        request_to_json(request_, SPIDER)
