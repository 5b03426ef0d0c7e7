"""Poison in a crawl's sessions is quarantined, not fatal (issue 10).

A crafted or corrupt value in a session's cookie jar, browser storage state
or the checkpointed ``spider.state`` costs that value only: it is dropped,
logged, counted and moved to the crawl's dead-letter list
(:mod:`statecrawl.frontier.deadletter`), and the worker goes on with the rest. The
store-level tests read and write a real redis-server; the crawls are real
``scrapy crawl`` processes against a small local site that records the
``Cookie`` header of every request, the members demo site (``/app`` in
Chromium) and its catalog.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from scrapy.settings import Settings

from statecrawl.demo.members import MembersSite
from statecrawl.exceptions import SecretKeyError
from statecrawl.frontier.deadletter import DATA_MAX
from statecrawl.frontier.item_codec import load_item
from statecrawl.render.browser import chromium_path
from statecrawl.sessions.browser_state import context_kwargs
from statecrawl.sessions.crypto import Sealer
from statecrawl.sessions.jar import SessionJar
from statecrawl.sessions.store import SessionStore, jar_field
from tests.conftest import RedisServer, worker_env
from tests.sessions.test_sessions import (
    Proc,
    cookie_header,
    finish,
    run_sessions,
    set_cookies,
    wait_until,
)

HOST = "127.0.0.1"
DEEP = b"[" * 100_000 + b"]" * 100_000  # nesting no JSON parser should follow


def bad_cookies() -> dict[bytes, bytes]:
    """Jar fields that cannot be rebuilt, each holding a ``SECRET-n`` that must stay out of logs."""
    def f(name: str) -> bytes:
        return jar_field(HOST, "/", name).encode()

    return {
        f("cut"): b'{"name":"cut","value":"SECRET-1","domain":"127.0.0.1","pa',
        f("list"): b'["SECRET-2","127.0.0.1","/"]',
        f("noname"): b'{"value":"SECRET-3","domain":"127.0.0.1","path":"/"}',
        f("x"): b'{"name":"x","value":"SECRET-4","domain":5,"path":"/"}',
        f("big"): b'{"name":"big","value":"SECRET-5","domain":"127.0.0.1","path":"/",'
                  b'"expires":1e400}',
        f("ver"): b'{"name":"ver","value":"SECRET-6","domain":"127.0.0.1","path":"/",'
                  b'"version":"one"}',
        f("deep"): DEEP,
        # a good cookie under a malformed field name (not [domain, path, name])
        b"not a field": b'{"name":"stray","value":"SECRET-7","domain":"127.0.0.1","path":"/"}',
        b"\xff\xfe not UTF-8": b'{"name":"stray3","value":"SECRET-0","domain":"127.0.0.1"}',
        # ... and under the field of another cookie
        f("other"): b'{"name":"stray2","value":"SECRET-8","domain":"127.0.0.1","path":"/"}',
    }


def good_cookie() -> tuple[str, bytes]:
    """The field and JSON the cookies middleware writes for ``good=yes`` from this host."""
    jar = SessionJar("default")
    set_cookies(jar, f"http://{HOST}/", "good=yes; Path=/")
    [(field, body)] = jar.take_changes().sets.items()
    return field, body


def dead_letters(server: RedisServer, crawl_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in server.client().lrange(f"sc:{{{crawl_id}}}:dead", 0, -1)]


def crawl_stats(server: RedisServer, crawl_id: str) -> dict[str, int]:
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
    return {k.decode(): int(v) for k, v in raw.items()}


def preview(raw: bytes) -> str:
    return raw[:DATA_MAX].decode("utf-8", "replace")


def field_text(field: bytes) -> str:
    return field.decode("utf-8", "replace")


# -- cookie jars, store level -------------------------------------------------------------


def test_bad_jar_fields_are_quarantined_and_the_rest_loads(redis_server: RedisServer,
                                                           crawl_id: str) -> None:
    jar_key = f"sc:{{{crawl_id}}}:jar:default"
    field, body = good_cookie()
    # good cookies with every kind of attribute the standard library keeps
    shop = SessionJar("default")
    set_cookies(shop, "https://www.shop.example/cart", "plain=1; Path=/",
                "flags=2; Path=/; Secure; HttpOnly; SameSite=Strict",
                "v1=3; Version=1; Path=/", "dom=4; Domain=.shop.example; Path=/; Max-Age=3600",
                "dated=5; Path=/cart; Expires=Wed, 01 Jan 2200 00:00:00 GMT", "novalue")
    good = {f.encode(): v for f, v in shop.take_changes().sets.items()} | {field.encode(): body}
    bad = bad_cookies()
    client = redis_server.client()
    client.hset(jar_key, mapping={**good, **bad})
    counted: list[str] = []

    async def load(store: SessionStore) -> SessionJar:
        store.on_quarantine = counted.append
        jar = SessionJar("default")
        loaded = jar.load(await store.load_jar("default"))
        assert loaded.expired == []
        assert sorted(p.entry.field for p in loaded.poison) == sorted(bad)
        for poison in loaded.poison:
            assert await store.quarantine_cookie("default", poison)
        return jar

    jar = run_sessions(redis_server.url, crawl_id, load)
    assert cookie_header(jar, f"http://{HOST}/page") == "good=yes"
    sent = cookie_header(jar, "https://www.shop.example/cart").split("; ")
    assert sorted(sent) == sorted(cookie_header(shop, "https://www.shop.example/cart").split("; "))
    assert len(sent) == 6
    assert len(jar) == len(good) and jar.take_changes().sets == {}  # mounted as stored
    assert client.hgetall(jar_key) == good
    letters = dead_letters(redis_server, crawl_id)
    assert {x["ref"]: x["data"] for x in letters} == {
        "default " + field_text(k): preview(v) for k, v in bad.items()}
    assert all(x["kind"] == "cookie" and x["error"] for x in letters)
    assert not any("SECRET" in x["error"] for x in letters)
    stats = crawl_stats(redis_server, crawl_id)
    assert stats["quarantined"] == stats["quarantined_cookie"] == len(bad)
    assert counted == ["cookie"] * len(bad)


def test_quarantine_keeps_a_value_rewritten_meanwhile(redis_server: RedisServer,
                                                      crawl_id: str) -> None:
    """Another worker wrote a good value into the field after this one read the bad one."""
    jar_key = f"sc:{{{crawl_id}}}:jar:default"
    field, body = good_cookie()
    client = redis_server.client()
    client.hset(jar_key, field, b"{not json")

    async def load(store: SessionStore) -> bool:
        [poison] = SessionJar("default").load(await store.load_jar("default")).poison
        client.hset(jar_key, field, body)  # the concurrent good write
        return await store.quarantine_cookie("default", poison)

    assert run_sessions(redis_server.url, crawl_id, load) is False
    assert client.hgetall(jar_key) == {field.encode(): body}
    assert dead_letters(redis_server, crawl_id) == []
    assert "quarantined" not in crawl_stats(redis_server, crawl_id)


def test_sealed_poison_stays_sealed_and_a_wrong_key_still_stops(redis_server: RedisServer,
                                                                crawl_id: str) -> None:
    key = Fernet.generate_key().decode()
    sealer = Sealer([key])
    jar_key = f"sc:{{{crawl_id}}}:jar:default"
    field, body = good_cookie()
    sealed_bad = sealer.seal(b'{"name":"x","value":"SECRET-9","domain":5}')
    client = redis_server.client()
    client.hset(jar_key, mapping={field: sealer.seal(body), jar_field(HOST, "/", "x"): sealed_bad})

    async def load(store: SessionStore) -> str:
        jar = SessionJar("default")
        loaded = jar.load(await store.load_jar("default"))
        for poison in loaded.poison:
            await store.quarantine_cookie("default", poison)
        return cookie_header(jar, f"http://{HOST}/")

    assert run_sessions(redis_server.url, crawl_id, load, sealer) == "good=yes"
    [letter] = dead_letters(redis_server, crawl_id)
    assert letter["data"] == sealed_bad.decode() and "SECRET" not in json.dumps(letter)
    # a value this worker's key cannot open is a configuration error, not poison
    with pytest.raises(SecretKeyError):
        run_sessions(redis_server.url, crawl_id, load, Sealer([Fernet.generate_key().decode()]))
    assert client.hlen(jar_key) == 1 and len(dead_letters(redis_server, crawl_id)) == 1


# -- storage states and spider state, store level -------------------------------------------

BAD_STATES = [
    b'{"cookies": [], "origins": [',
    b'[{"cookies": []}]',
    b'{"cookies": 5, "origins": []}',
    b'{"cookies": [{"name": "a", "value": 1, "domain": "x", "path": "/"}], "origins": []}',
    b'{"cookies": [], "origins": [{"origin": "http://a", "localStorage": [["t", "SECRET"]]}]}',
    b'{"cookies": [{"name": "a", "value": "b", "domain": "x", "path": "/", "expires": 1e400}],'
    b' "origins": []}',
    DEEP,
]


@pytest.mark.parametrize("raw", BAD_STATES, ids=range(len(BAD_STATES)))
def test_bad_storage_state_is_quarantined_and_the_context_starts_fresh(
        redis_server: RedisServer, crawl_id: str, raw: bytes) -> None:
    key = f"sc:{{{crawl_id}}}:browser:pool-1"
    client = redis_server.client()
    client.set(key, raw)

    async def body(store: SessionStore) -> dict[str, Any]:
        return await context_kwargs(store, "pool-1", base={"locale": "en-GB"})

    assert run_sessions(redis_server.url, crawl_id, body) == {"locale": "en-GB"}
    assert client.get(key) is None
    [letter] = dead_letters(redis_server, crawl_id)
    assert (letter["kind"], letter["ref"], letter["data"]) == ("storage_state", "pool-1",
                                                              preview(raw))
    assert crawl_stats(redis_server, crawl_id)["quarantined_storage_state"] == 1
    # the next load finds nothing, and quarantines nothing more
    assert run_sessions(redis_server.url, crawl_id, body) == {"locale": "en-GB"}
    assert len(dead_letters(redis_server, crawl_id)) == 1


BAD_SPIDER_STATES = [
    b'{"page": 3',
    b'[3]',
    b'{"page": 1e400}',
    b'{"a": ' * 100 + b"1" + b"}" * 100,  # readable, but checkpoints could never save it again
    DEEP,
]


@pytest.mark.parametrize("raw", BAD_SPIDER_STATES, ids=range(len(BAD_SPIDER_STATES)))
def test_bad_spider_state_is_quarantined(redis_server: RedisServer, crawl_id: str,
                                         raw: bytes) -> None:
    key = f"sc:{{{crawl_id}}}:spider_state"
    client = redis_server.client()
    client.set(key, raw)

    async def body(store: SessionStore) -> Any:
        return await store.load_spider_state()

    assert run_sessions(redis_server.url, crawl_id, body) is None
    assert client.get(key) is None
    [letter] = dead_letters(redis_server, crawl_id)
    assert (letter["kind"], letter["ref"], letter["data"]) == ("spider_state", "spider_state",
                                                              preview(raw))
    assert crawl_stats(redis_server, crawl_id)["quarantined_spider_state"] == 1


# -- real workers -----------------------------------------------------------------------------


class CookieSite:
    """``/`` links to ``/p/1`` .. ``/p/N``; every request's ``Cookie`` header is recorded.

    Requests whose User-Agent is in :attr:`slow` wait that many seconds, so one
    worker can be kept busy while another starts.
    """

    def __init__(self, pages: int, slow: dict[str, float]) -> None:
        self.pages, self.slow = pages, slow
        self.log: list[tuple[str, str, str]] = []  # (path, User-Agent, Cookie)
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                agent = self.headers.get("User-Agent", "")
                with site._lock:
                    site.log.append((self.path, agent, self.headers.get("Cookie", "")))
                time.sleep(site.slow.get(agent, 0.0))
                if self.path == "/robots.txt":
                    body, ctype = b"User-agent: *\nAllow: /\n", "text/plain"
                elif self.path == "/":
                    links = "".join(f"<a href='/p/{i}'>Page {i}</a> " for i in range(1, pages + 1))
                    body, ctype = f"<html><body><h1>Home</h1>{links}</body></html>".encode(), \
                        "text/html"
                else:
                    body = f"<html><body><h1>Page {self.path}</h1></body></html>".encode()
                    ctype = "text/html"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}"

    def page_urls(self) -> list[str]:
        return [f"{self.url}/", *(f"{self.url}/p/{i}" for i in range(1, self.pages + 1))]

    def requests(self, agent: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(path, cookie) for path, a, cookie in self.log if a == agent]

    def __enter__(self) -> CookieSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def cookie_site() -> Iterator[CookieSite]:
    with CookieSite(pages=60, slow={"worker-a": 0.3}) as site:
        yield site


@pytest.mark.slow
def test_poisoned_jar_of_a_running_crawl(redis_server: RedisServer, cookie_site: CookieSite,
                                         crawl_id: str, tmp_path: Path) -> None:
    """Bad fields land in the running crawl's jar; a worker that mounts it drops them only."""
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    args = ["-a", f"url={cookie_site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0",
            "-s", "LOG_LEVEL=INFO"]
    a = Proc("site", [*args, "-s", "USER_AGENT=worker-a", "-s", "CONCURRENT_REQUESTS=1"],
             worker_env(redis_server.url, tmp_path / "a"), tmp_path / "a.log")
    procs = [a]
    try:
        wait_until(lambda: len(cookie_site.requests("worker-a")) >= 4 or a.proc.poll() is not None,
                   60, "worker a is crawling")
        assert a.proc.poll() is None, a.log()
        field, body = good_cookie()
        bad = bad_cookies()
        client.hset(k + "jar:default", mapping={field.encode(): body, **bad})
        b = Proc("site", [*args, "-s", "USER_AGENT=worker-b"],
                 worker_env(redis_server.url, tmp_path / "b"), tmp_path / "b.log")
        procs.append(b)
        logs = finish(procs, 120)
    finally:
        for p in procs:
            p.kill()
    assert [p.proc.returncode for p in procs] == [0, 0], logs
    # every page got a good item, whichever worker fetched it
    items = {u.decode(): load_item(v) for u, v in client.hgetall(k + "items").items()}
    assert set(cookie_site.page_urls()) <= set(items)
    assert {u: i["error"] for u, i in items.items() if i["error"] or i["status"] != 200} == {}
    # worker b mounted the jar: the good cookie went with each of its pages, nothing bad did
    pages_b = [(p, c) for p, c in cookie_site.requests("worker-b") if p.startswith("/p/")]
    assert len(pages_b) >= 5, logs
    assert {c for _, c in pages_b} == {"good=yes"}
    # the bad fields are in the dead-letter list and gone from the jar, counted once
    assert client.hgetall(k + "jar:default") == {field.encode(): body}
    letters = dead_letters(redis_server, crawl_id)
    assert sorted(x["ref"] for x in letters) == sorted("default " + field_text(f) for f in bad)
    assert {x["ref"]: x["data"] for x in letters} == {
        "default " + field_text(f): preview(v) for f, v in bad.items()}
    stats = crawl_stats(redis_server, crawl_id)
    assert stats["quarantined_cookie"] == stats["quarantined"] == len(bad)
    # logged at ERROR naming session and field, never the cookie value; counted by the worker
    text = b.text()
    for f in bad:
        assert f"ERROR: statecrawl: cookie field {field_text(f)} of session default" in text
    assert "SECRET" not in a.text() + text
    assert f"'statecrawl/quarantined': {len(bad)}" in text


def members_args(site: MembersSite, crawl_id: str, path: str) -> list[str]:
    return ["-a", f"url={site.url}{path}", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0",
            "-s", "LOG_LEVEL=INFO"]


@pytest.mark.slow
@pytest.mark.skipif(chromium_path(Settings()) is None, reason="no Chromium here")
def test_poisoned_storage_state_starts_a_fresh_context(redis_server: RedisServer, crawl_id: str,
                                                       tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    raw = b'{"cookies": [{"name": 7, "value": "SECRET-S"}], "origins": "everywhere"}'
    client.set(k + "browser:default", raw)
    with MembersSite(pages=1) as site:
        proc = Proc("site", [*members_args(site, crawl_id, "/app"), "-a", "render=browser"],
                    worker_env(redis_server.url, tmp_path), tmp_path / "w.log")
        logs = finish([proc], 180)
        url = f"{site.url}/app"
    assert proc.proc.returncode == 0, logs
    item = load_item(client.hget(k + "items", url))
    assert item["error"] is None and item["renderer"] == "browser", item
    assert "token tok-" in item["markdown"]
    [letter] = dead_letters(redis_server, crawl_id)
    assert (letter["kind"], letter["ref"], letter["data"]) == ("storage_state", "default",
                                                              raw.decode())
    assert crawl_stats(redis_server, crawl_id)["quarantined_storage_state"] == 1
    # the fresh context's state was saved in its place
    assert json.loads(client.get(k + "browser:default"))["origins"], logs
    assert "SECRET" not in proc.text()


@pytest.mark.slow
def test_poisoned_spider_state_starts_empty(redis_server: RedisServer, crawl_id: str,
                                            tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    client.set(k + "spider_state", DEEP)
    with MembersSite(pages=1, catalog_pages=10, items_per_page=3, delay=0.1) as site:
        proc = Proc("catalog", [*members_args(site, crawl_id, "/catalog"),
                                "-s", "STATECRAWL_CHECKPOINT_INTERVAL=0.1"],
                    worker_env(redis_server.url, tmp_path), tmp_path / "w.log")
        logs = finish([proc], 120)
        products = set(site.catalog_item_urls())
    assert proc.proc.returncode == 0, logs
    # the walk started at page 1 and went to the end: every product is stored
    assert products <= {u.decode() for u in client.hkeys(k + "items")}
    assert json.loads(client.get(k + "spider_state")) == {"page": 11, "done": True}
    [letter] = dead_letters(redis_server, crawl_id)
    assert (letter["kind"], letter["ref"], letter["data"]) == ("spider_state", "spider_state",
                                                              preview(DEEP))
    assert crawl_stats(redis_server, crawl_id)["quarantined_spider_state"] == 1
    text = proc.text()
    assert "spider.state" in text and "empty" in text
    # checkpoints ran while it walked, not only at close
    assert "'statecrawl/checkpoints': 1," not in text and "'statecrawl/checkpoints'" in text
