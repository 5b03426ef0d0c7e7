"""The compact frontier: packed requests, the crawl's dictionary, lists + queue, the old layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import zstandard
from scrapy import Request, Spider
from scrapy.http import FormRequest

from statecrawl import cli
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import SerializationError
from statecrawl.frontier.packing import DICT_SAMPLES, RequestCodec, host_of_url
from statecrawl.frontier.serialize import request_from_json, request_to_json
from statecrawl.frontier.store import CrawlStore, PendingRequest
from tests.conftest import RedisServer, run_store, scrapy_crawl, worker_env


class _Spider(Spider):
    name = "packing"

    def parse(self, response: Any) -> None:
        pass

    def on_error(self, failure: Any) -> None:
        pass


SPIDER = _Spider()


def site_request(n: int, host: str = "www.example-news.com") -> Request:
    r = Request(f"https://{host}/world/2024/05/{n % 28 + 1:02d}/story-about-thing-{n}",
                callback=SPIDER.parse, errback=SPIDER.on_error,
                meta={"dont_redirect": True, "handle_httpstatus_list": [301, 302], "depth": 2})
    r.headers["Referer"] = f"https://{host}/world/index-{n // 100}"
    return r


def fields(r: Request) -> tuple[Any, ...]:
    return (type(r), r.url, r.method, r.callback, r.errback, dict(r.headers), r.body, r.meta,
            r.priority, r.dont_filter, r.flags, r.cb_kwargs, r.cookies, r.encoding)


def roundtrip(codec: RequestCodec, r: Request) -> Request:
    value = codec.pack(request_to_json(r, SPIDER, compact=True), r.url)
    return request_from_json(codec.unpack(value), SPIDER)


@pytest.mark.parametrize("request_", [
    site_request(1),
    Request("http://a.example/x?q=1", callback=SPIDER.parse, priority=7, dont_filter=True,
            flags=["f"], cb_kwargs={"k": [1, 2]}, cookies={"c": "v"}, encoding="latin-1"),
    FormRequest("https://b.example/login", formdata={"u": "x"}, callback=SPIDER.parse),
    Request("https://[::1]:8443/p", method="PUT", body=b"\x00\xff", meta={"m": None}),
])
def test_a_packed_request_reads_back_as_it_was(request_: Request) -> None:
    plain = RequestCodec()
    assert fields(roundtrip(plain, request_)) == fields(request_)
    trained = RequestCodec()
    for n in range(DICT_SAMPLES):
        trained.pack(request_to_json(site_request(n), SPIDER, compact=True), site_request(n).url)
    proposal = trained.proposal()
    assert proposal is not None
    trained.adopt(proposal)
    trained.home = "www.example-news.com"
    assert fields(roundtrip(trained, request_)) == fields(request_)
    # the full JSON of the previous versions still reads back the same way
    assert fields(request_from_json(trained.unpack(request_to_json(request_, SPIDER)), SPIDER)) == \
        fields(request_)


def test_the_dictionary_and_the_home_host_shrink_a_request() -> None:
    codec = RequestCodec(home="www.example-news.com")
    compact = [request_to_json(site_request(n), SPIDER, compact=True) for n in range(2000)]
    full = len(request_to_json(site_request(1999), SPIDER))
    before = [codec.pack(c, site_request(n).url) for n, c in enumerate(compact[:DICT_SAMPLES])]
    assert codec.ready() and before[0][:2] == b"\x02\x00"  # zstd without dictionary, home host
    codec.adopt(codec.proposal() or b"")
    after = [codec.pack(c, site_request(n).url) for n, c in enumerate(compact[1000:])]
    assert all(v[:2] == b"\x03\x00" for v in after)
    other = codec.pack(compact[0], "https://cdn.example.org/x")
    assert other.startswith(b"\x03cdn.example.org\x00")
    mean = sum(map(len, after)) / len(after)
    assert mean < len(compact[-1]) / 3 and mean < full / 4, (mean, len(compact[-1]), full)


@pytest.mark.parametrize("value, error", [
    (b"\x07host\x00{}", "unknown stored format"),
    (b"\x02host", "unknown stored format"),  # no NUL after the host
    (b"\x02\x00\x01\x02\x03", "does not decompress"),
    (b"\x03\x00" + b"x" * 20, "a dictionary the crawl does not have"),
])
def test_a_damaged_value_is_a_serialization_error(value: bytes, error: str) -> None:
    with pytest.raises(SerializationError, match=error):
        RequestCodec().unpack(value)


def test_a_frame_that_claims_too_much_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        1, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=0, write_content_size=1)
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(b" " * (2 << 20))
    with pytest.raises(SerializationError, match="a compressed frame of"):
        RequestCodec().unpack(b"\x02\x00" + bomb)


def test_host_of_url_is_the_lowercase_hostname() -> None:
    assert host_of_url("https://User@WWW.Example.COM:8080/x") == "www.example.com"
    assert host_of_url("http://[::1]:80/") == "::1"
    assert host_of_url("data:,x") == ""


def _pending(body: bytes, priority: int = 0) -> PendingRequest:
    return PendingRequest(hashlib.sha1(body).digest(), True, -priority, body)


def test_lists_and_the_queue_lease_by_priority_then_age(redis_url: str, crawl_id: str) -> None:
    """Requests given back (in ``queue``) go before new ones (lists) of their priority."""
    async def body(store: CrawlStore) -> list[bytes]:
        await store.commit("w", dedupe="none", requests=[_pending(b"a"), _pending(b"b", 5)])
        _, pairs = await store.lease("w", 2, check_finished=False)
        assert [b for _, b in pairs] == [b"b", b"a"]
        await store.commit("w", dedupe="none", requests=[
            _pending(b"c"), _pending(b"d", 5), _pending(b"e", -1), _pending(b"f", 5)])
        assert await store.release("w", [lid for lid, _ in pairs]) == 2  # a and b go back
        assert (await store.status())["queued"] == 6
        _, pairs = await store.lease("w", 10, check_finished=False)
        k = store.keys
        assert await store.client.exists(k.fifo, k.fifo_list(0), k.fifo_list(-5), k.queue) == 0
        assert sorted(await store.client.hkeys(k.leases)) == sorted(lid.encode() for lid, _ in pairs)
        return [b for _, b in pairs]

    assert run_store(redis_url, crawl_id, body) == [b"b", b"d", b"f", b"a", b"c", b"e"]


def test_a_polite_crawl_sorts_packed_requests_by_host(redis_url: str, crawl_id: str) -> None:
    """polite.lua reads the host in clear; an empty one is the start URL's host."""
    async def body(store: CrawlStore) -> list[str]:
        await store.client.hset(store.keys.meta, mapping={
            "polite": "1", "start_url": "https://Home.Example/"})
        codec = RequestCodec(home="home.example")
        urls = ["https://home.example/1", "https://other.example/2", "https://home.example/3"]
        await store.commit("w", dedupe="none", requests=[
            _pending(codec.pack(request_to_json(Request(u), SPIDER, compact=True), u))
            for u in urls])
        _, pairs = await store.lease("w", 3, check_finished=False)
        assert sorted(json.loads(codec.unpack(v))["url"] for _, v in pairs) == sorted(urls)
        leases = await store.client.hvals(store.keys.leases)  # "<worker> <score> <host>"
        return sorted(v.decode().split(" ")[2] for v in leases)

    assert run_store(redis_url, crawl_id, body) == ["home.example", "home.example", "other.example"]


def _downgrade(client: Any, crawl_id: str) -> int:
    """Rewrite the crawl's lists as the previous version stored its frontier: full JSON in
    ``reqs`` and an id in ``queue``; returns how many."""
    k = f"sc:{{{crawl_id}}}:"
    codec = RequestCodec(client.get(k + "zdict"))

    def full_json(value: bytes) -> str:
        doc = {"v": 1, "method": "GET", "cls": "Request", "callback": None, "errback": None,
               "headers": {}, "priority": 0, "dont_filter": False, "encoding": "utf-8",
               "flags": [], "meta": {}, "cb_kwargs": {}, **json.loads(codec.unpack(value))}
        return json.dumps(doc, separators=(",", ":"))

    for rid in client.zrange(k + "queue", 0, -1):  # leases given back when the worker stopped
        client.hset(k + "reqs", rid, full_json(client.hget(k + "reqs", rid)))
    for score in client.zrange(k + "fifo", 0, -1):
        for value in client.lrange(k + f"fifo:{score.decode()}", 0, -1):
            rid = f"{client.incr(k + 'seq'):012x}"
            client.hset(k + "reqs", rid, full_json(value))
            client.zadd(k + "queue", {rid: float(score)})
        client.delete(k + f"fifo:{score.decode()}")
    client.delete(k + "fifo")
    assert client.hlen(k + "leases") == 0
    return int(client.zcard(k + "queue"))


def test_a_crawl_stored_by_the_previous_version_finishes(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    """A crawl in progress survives the upgrade: its queued JSON requests are leased and
    fetched, each page once, beside the new packed ones."""
    site.reset_hits()
    args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0"]
    first = scrapy_crawl([*args, "-s", "CLOSESPIDER_PAGECOUNT=3", "-s", "CONCURRENT_REQUESTS=1"],
                         worker_env(redis_server.url, tmp_path / "a"))
    assert first.returncode == 0, first.stdout[-2000:]  # type: ignore[union-attr]
    client = redis_server.client()
    assert _downgrade(client, crawl_id) >= 5  # links of the first pages, in the old layout
    second = scrapy_crawl(args, worker_env(redis_server.url, tmp_path / "b"))
    assert second.returncode == 0, second.stdout[-2000:]  # type: ignore[union-attr]
    assert "Spider closed (finished)" in second.stdout + second.stderr  # type: ignore[union-attr]
    for url in site.expected_urls():
        path = url.split(site.url, 1)[1] or "/"
        assert site.hits[path] == 1, (path, site.hits[path])
    export = tmp_path / "export"
    assert cli.main(["--redis-url", redis_server.url, "export", crawl_id, "--out", str(export)]) == 0
    exported = [json.loads(x)["url"] for x in (export / "pages.jsonl").read_text().splitlines()]
    assert exported == sorted(site.expected_urls())
    assert client.get(f"sc:{{{crawl_id}}}:zdict") is None  # 60 pages: too few for a dictionary
