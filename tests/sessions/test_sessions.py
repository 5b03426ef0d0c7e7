"""Durable sessions: cookie jars, the session pool, secrets at rest, storage states.

Most tests work on the store (a real redis-server, no Scrapy process): jar
diffs, encryption at rest, the pool script, the login lock, storage states,
argument handling. The last one runs two real ``scrapy crawl site`` workers
with a session pool behind two proxies of a
:class:`~statecrawl.demo.members.MembersSite`, which blocks busy visitors
with 403 and sees which proxy each request came through. The crawl-wide
login is tested in ``test_login.py``; the helpers here are shared with it
and with ``test_checkpoint.py``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from cryptography.fernet import Fernet
from redis.asyncio import Redis as AsyncRedis
from scrapy import Request
from scrapy.http import Response
from scrapy.utils.test import get_crawler

from statecrawl.demo.members import MembersSite
from statecrawl.exceptions import ConfigError, SecretKeyError
from statecrawl.frontier.item_codec import load_item
from statecrawl.sessions.browser_state import context_kwargs, save_storage_state
from statecrawl.sessions.crypto import Sealer
from statecrawl.sessions.jar import SessionJar
from statecrawl.sessions.login import pop_session_args
from statecrawl.sessions.passthrough import PassThroughMiddleware
from statecrawl.sessions.store import PoolLimits, SessionDelta, SessionStore, session_id
from tests.conftest import ROOT, RedisServer, worker_env

T = TypeVar("T")
LOGIN_FORM = '{"user": "alice", "password": "s3cret"}'


def run_sessions(redis_url: str, crawl_id: str, body: Callable[[SessionStore], Awaitable[T]],
                 sealer: Sealer | None = None) -> T:
    async def main() -> T:
        client = AsyncRedis.from_url(redis_url)
        try:
            return await body(SessionStore(client, crawl_id, sealer))
        finally:
            await client.aclose()

    return asyncio.run(main())


def set_cookies(jar: SessionJar, url: str, *headers: str) -> None:
    """What the cookies middleware does with a response's Set-Cookie headers."""
    request = Request(url)
    response = Response(url, headers={"Set-Cookie": list(headers)}, request=request)
    for cookie in jar.jar.make_cookies(response, request):
        jar.jar.set_cookie_if_ok(cookie, request)


def cookie_header(jar: SessionJar, url: str) -> str:
    request = Request(url)
    jar.jar.add_cookie_header(request)
    return request.headers.get("Cookie", b"").decode()


# -- cookie jars in Redis ---------------------------------------------------------------

def test_jar_is_written_as_diffs_and_mounted_elsewhere(redis_url: str, crawl_id: str) -> None:
    async def body(store: SessionStore) -> None:
        url = "http://shop.example/cart"
        jar = SessionJar("default")
        set_cookies(jar, url, "sid=abc; Path=/", "theme=dark; Max-Age=3600; Path=/",
                    "gone=1; Max-Age=3600; Path=/")
        changes = jar.take_changes()
        assert len(changes.sets) == 3 and not changes.deletes
        await store.write_jar("default", changes)
        jar.written(changes)
        # the same Set-Cookie again (sites send it on every page): nothing to write
        set_cookies(jar, url, "sid=abc; Path=/")
        assert jar.take_changes().sets == {}
        # one cookie changes, one is deleted by the site: one HSET, one HDEL
        set_cookies(jar, url, "sid=xyz; Path=/", "gone=; Max-Age=0; Path=/")
        changes = jar.take_changes()
        assert [json.loads(f)[2] for f in changes.sets] == ["sid"]
        assert [json.loads(f)[2] for f in changes.deletes] == ["gone"]
        await store.write_jar("default", changes)
        # another worker mounts the jar: same cookies, same Cookie header
        other = SessionJar("default")
        assert other.load(await store.load_jar("default")).expired == []
        assert sorted(cookie_header(other, url).split("; ")) == ["sid=xyz", "theme=dark"]
        assert other.take_changes().sets == {}  # loading is not a change

    run_sessions(redis_url, crawl_id, body)


def test_expired_cookies_are_dropped_at_load(redis_url: str, crawl_id: str) -> None:
    async def body(store: SessionStore) -> None:
        url = "http://shop.example/"
        jar = SessionJar("s1")
        set_cookies(jar, url, "short=1; Max-Age=1; Path=/", "long=2; Max-Age=3600; Path=/")
        await store.write_jar("s1", jar.take_changes())
        await asyncio.sleep(1.2)
        fresh = SessionJar("s1")
        expired = fresh.load(await store.load_jar("s1")).expired
        assert [json.loads(f)[2] for f in expired] == ["short"]
        assert cookie_header(fresh, url) == "long=2"

    run_sessions(redis_url, crawl_id, body)


def test_session_ids_are_safe_key_parts() -> None:
    assert session_id(None) == "default"
    assert session_id(3) == session_id("3") == "3"
    assert session_id("user@example.com/x").startswith("h:")
    assert session_id("a" * 65).startswith("h:")


# -- secrets at rest ----------------------------------------------------------------------

def test_encrypted_values_are_unreadable_and_round_trip(redis_server: RedisServer,
                                                        crawl_id: str) -> None:
    key = Fernet.generate_key().decode()
    sealer = Sealer([key])
    secret = "sess-" + "7" * 24
    state = {"cookies": [{"name": "jwt", "value": secret, "domain": "a", "path": "/"}],
             "origins": [{"origin": "http://a", "localStorage": [{"name": "t", "value": secret}]}]}

    async def write(store: SessionStore) -> None:
        jar = SessionJar("default")
        set_cookies(jar, "http://a.example/", f"sid={secret}; Path=/")
        await store.write_jar("default", jar.take_changes())
        await store.save_storage_state("default", state)
        await store.save_spider_state(json.dumps({"token": secret}).encode())

    run_sessions(redis_server.url, crawl_id, write, sealer)
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    raw = [*client.hvals(k + "jar:default"), client.get(k + "browser:default"),
           client.get(k + "spider_state")]
    assert all(v.startswith(b"gAAAAA") and secret.encode() not in v for v in raw), raw

    async def read(store: SessionStore) -> tuple[list[dict[str, Any]], Any, Any]:
        return ([json.loads(e.body) for e in await store.load_jar("default")],
                await store.load_storage_state("default"), await store.load_spider_state())

    cookies, browser, spider = run_sessions(redis_server.url, crawl_id, read, sealer)
    assert cookies[0]["value"] == secret and browser == state and spider == {"token": secret}
    # a second key for rotation: the old one still decrypts
    rotated = Sealer([Fernet.generate_key().decode(), key])
    assert run_sessions(redis_server.url, crawl_id, read, rotated)[2] == {"token": secret}
    # without the key, or with another one: refused, never mounted as garbage
    for wrong in (Sealer(), Sealer([Fernet.generate_key().decode()])):
        with pytest.raises(SecretKeyError):
            run_sessions(redis_server.url, crawl_id, read, wrong)


def test_plaintext_is_refused_once_a_key_is_set(redis_url: str, crawl_id: str) -> None:
    async def body(store: SessionStore) -> None:
        await store.save_spider_state(b'{"page": 3}')

    run_sessions(redis_url, crawl_id, body)  # no key: plain JSON

    async def read(store: SessionStore) -> Any:
        return await store.load_spider_state()

    assert run_sessions(redis_url, crawl_id, read) == {"page": 3}
    with pytest.raises(SecretKeyError, match="unencrypted"):
        run_sessions(redis_url, crawl_id, read, Sealer([Fernet.generate_key().decode()]))
    with pytest.raises(ConfigError, match="Fernet"):
        Sealer(["not a key"])


# -- the session pool ---------------------------------------------------------------------

def test_pool_fills_binds_proxies_and_retires(redis_server: RedisServer, crawl_id: str) -> None:
    limits = PoolLimits(size=3, max_uses=5, max_errors=2.0, max_age=0, proxies=2)

    async def body(store: SessionStore) -> None:
        first = await store.flush(limits, ensure=["default"])
        pool = [m.session for m in first.pool]
        assert pool == ["pool-2", "pool-3", "pool-4"]  # "default" took number 1
        proxies = {m.session: m.proxy for m in first.pool} | first.proxies
        assert proxies == {"default": 0, "pool-2": 1, "pool-3": 0, "pool-4": 1}
        # a blocked status retires at once; uses and errors add up across workers
        second = await store.flush(limits, deltas={
            "pool-2": SessionDelta(uses=1, errors=1, retire="403"),
            "pool-3": SessionDelta(uses=5), "pool-4": SessionDelta(uses=1, errors=2)})
        assert sorted(second.retired) == ["pool-2", "pool-3", "pool-4"]
        assert [m.session for m in second.pool] == ["pool-5", "pool-6", "pool-7"]
        records = await store.sessions()
        assert (records["pool-2"]["retired"], records["pool-3"]["retired"],
                records["pool-4"]["retired"]) == ("403", "max_uses", "max_errors")
        assert records["default"]["pooled"] is False and "retired" not in records["default"]
        # a session named by the spider is counted, never retired here
        third = await store.flush(limits, deltas={"default": SessionDelta(uses=99, errors=9,
                                                                          retire="403")})
        assert third.retired == () and (await store.sessions())["default"]["uses"] == 99
        # the binding is made once: asking again returns the same proxy
        assert (await store.flush(limits, ensure=["default"])).proxies == {"default": 0}

    run_sessions(redis_server.url, crawl_id, body)
    stats = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:stats")
    assert int(stats[b"sessions_created"]) == 7 and int(stats[b"sessions_retired"]) == 3


def test_retired_sessions_lose_their_cookies_and_age_out(redis_server: RedisServer,
                                                         crawl_id: str) -> None:
    limits = PoolLimits(size=1, max_uses=0, max_errors=0, max_age=0.5, proxies=0)

    async def body(store: SessionStore) -> None:
        [member] = (await store.flush(limits)).pool
        jar = SessionJar(member.session)
        set_cookies(jar, "http://a.example/", "visitor=v1; Path=/")
        await store.flush(limits, jars={member.session: jar.take_changes()})
        await store.save_storage_state(member.session, {"cookies": [], "origins": []})
        assert await store.load_jar(member.session)
        await asyncio.sleep(0.6)
        result = await store.flush(limits)
        assert result.retired == (member.session,) and result.pool[0].session != member.session
        assert await store.load_jar(member.session) == []
        assert await store.load_storage_state(member.session) is None
        assert (await store.sessions())[member.session]["retired"] == "max_age"

    run_sessions(redis_server.url, crawl_id, body)


# -- the login lock -----------------------------------------------------------------------

def test_login_lock_is_exclusive_and_released_by_its_owner_only(redis_url: str,
                                                                crawl_id: str) -> None:
    async def body(store: SessionStore) -> None:
        assert (await store.login_state()).generation == 0
        assert await store.try_lock("t1 w1", 5)
        assert not await store.try_lock("t2 w2", 5)
        assert not await store.release_lock("t2 w2")  # not ours: kept
        assert await store.lock_holder() == "t1 w1"
        assert await store.login_done("t1 w1", "w1", True) == 1
        assert await store.lock_holder() is None  # released with the generation bump
        # a lock that expired and was taken by another worker is not ours any more
        assert await store.try_lock("t3 w3", 0.05)
        await asyncio.sleep(0.1)
        assert await store.try_lock("t4 w4", 5)
        assert await store.login_done("t3 w3", "w3", True) == -1
        assert (await store.login_state()).generation == 1
        assert await store.login_done("t4 w4", "w4", False, "wrong password") == 0
        state = await store.login_state()
        assert (state.generation, state.error) == (1, "wrong password") and state.failed_at

    run_sessions(redis_url, crawl_id, body)


# -- browser storage states ------------------------------------------------------------------

class FakeContext:
    """The one method of a Playwright BrowserContext that is used."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    async def storage_state(self) -> dict[str, Any]:
        return self.state


def test_storage_state_saved_and_given_to_a_new_context(redis_url: str, crawl_id: str) -> None:
    state = {"cookies": [{"name": "jsid", "value": "j1", "domain": "a.example", "path": "/"}],
             "origins": [{"origin": "http://a.example",
                          "localStorage": [{"name": "token", "value": "tok-1"}]}]}

    async def body(store: SessionStore) -> None:
        assert await context_kwargs(store, "pool-1") == {}
        assert await save_storage_state(store, "pool-1", FakeContext(state)) > 0
        kwargs = await context_kwargs(store, "pool-1", proxy="http://u:p%40ss@10.0.0.1:3128",
                                      base={"locale": "en-GB"})
        assert kwargs == {"locale": "en-GB", "storage_state": state, "proxy": {
            "server": "http://10.0.0.1:3128", "username": "u", "password": "p@ss"}}

    run_sessions(redis_url, crawl_id, body)


# -- arguments and pass-through ---------------------------------------------------------------

def test_session_arguments_are_never_recorded() -> None:
    from statecrawl.spiders.site import SiteSpider

    spider = SiteSpider(url="http://a.example/", login_url="http://a.example/login",
                        login_form=LOGIN_FORM, cookies='{"sid": "s3cr3t"}',
                        headers='{"Authorization": "Bearer t0k3n"}')
    assert spider.login_form == {"user": "alice", "password": "s3cret"}
    assert spider.statecrawl_cookies == {"sid": "s3cr3t"}
    text = json.dumps(spider.crawl_args)
    assert "login_url" in spider.crawl_args
    assert "s3cret" not in text and "s3cr3t" not in text and "t0k3n" not in text
    for bad in ({"cookies": "[1]"}, {"headers": "{nope"}, {"login_form": LOGIN_FORM},
                {"login_url": "ftp://a/"}):
        with pytest.raises(ConfigError):
            pop_session_args(dict(bad))


def test_passthrough_headers_are_taken_off_before_a_copy_is_made() -> None:
    crawler = get_crawler()
    crawler.spider = type("S", (), {"statecrawl_cookies": {"sid": "p1"},
                                    "statecrawl_headers": {"X-Token": "t1"},
                                    "allowed_domains": ["a.example"]})()  # they go only there
    mw = PassThroughMiddleware.from_crawler(crawler)
    request = Request("http://a.example/", headers={"Cookie": "sid=jar; theme=dark"})
    mw.process_request(request)
    assert request.headers["X-Token"] == b"t1"
    assert request.headers["Cookie"] == b"theme=dark; sid=p1"  # ours replaces the jar's sid
    mw.process_response(request, Response(request.url, request=request))
    assert "X-Token" not in request.headers
    assert request.headers["Cookie"] == b"sid=jar; theme=dark"


# -- real workers -----------------------------------------------------------------------------


class Proc:
    """A `scrapy crawl <spider>` process logging to a file."""

    def __init__(self, spider: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scrapy", "crawl", spider, *args],
                                         cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self, tail: int = 4000) -> str:
        return f"--- {self.log_path.name} (rc={self.proc.returncode}) ---\n{self.text()[-tail:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        time.sleep(0.02)


def finish(procs: list[Proc], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            p.kill()
    return "\n".join(p.log() for p in procs)


def items_of(server: RedisServer, crawl_id: str) -> dict[str, dict[str, Any]]:
    raw = server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    return {k.decode(): load_item(v) for k, v in raw.items()}


slow = pytest.mark.slow


@slow
def test_pool_retires_blocked_sessions_and_keeps_proxies(redis_server: RedisServer,
                                                         crawl_id: str, tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    # at most ~40 pages/s per worker: both workers are at work for seconds
    with MembersSite(pages=300, block_after=25, delay=0.05) as site:
        proxies = [site.add_proxy(), site.add_proxy()]
        args = ["-a", f"url={site.url}/pool/", "-a", f"crawl_id={crawl_id}",
                "-s", "RETRY_TIMES=0", "-s", "CONCURRENT_REQUESTS=2",
                "-s", "STATECRAWL_SESSION_POOL_SIZE=3", "-s", "STATECRAWL_SESSION_MAX_ROTATIONS=10",
                "-s", f"STATECRAWL_PROXIES={json.dumps(proxies)}"]
        procs = [Proc("site", [*args, "-s", f"USER_AGENT=worker-{i}"],
                      worker_env(redis_server.url, tmp_path / f"w{i}"), tmp_path / f"w{i}.log")
                 for i in range(2)]
        logs = finish(procs, 120)
        assert [p.proc.returncode for p in procs] == [0, 0], logs
        # every page ended as a 200: a blocked request was sent again with another session
        items = items_of(redis_server, crawl_id)
        pages = set(site.pool_urls())
        assert pages <= set(items)
        assert {u: items[u]["status"] for u in pages if items[u]["status"] != 200} == {}
        # sessions were retired on 403, crawl-wide
        records = {s.decode(): json.loads(v) for s, v in client.hgetall(k + "sessions").items()}
        retired = [r for r in records.values() if r.get("retired") == "403"]
        assert retired, records
        assert "statecrawl/session_rotations" in logs
        # proxy affinity: every visitor (one site-side session) came through one proxy only,
        # although both workers used it; no request went around the proxies
        hits = [h for h in site.hits("/pool/")]
        assert hits and all(h.proxy is not None for h in hits)
        via: dict[str, set[int | None]] = collections.defaultdict(set)
        agents: dict[str, set[str]] = collections.defaultdict(set)
        for h in hits:
            if h.visitor:
                via[h.visitor].add(h.proxy)
                agents[h.visitor].add(h.agent)
        assert {v: p for v, p in via.items() if len(p) != 1} == {}
        assert len({p for ps in via.values() for p in ps}) == 2  # both proxies in use
        assert any(len(a) == 2 for a in agents.values()), agents  # shared across workers
        # Redis keeps the proxy's index, never its URL
        assert all(r["proxy"] in (0, 1) for r in records.values())
        assert not any(p.encode() in v for v in client.hvals(k + "sessions") for p in proxies)


def dump(client: redis.Redis, key: bytes) -> bytes:
    """Every value stored under *key*, concatenated."""
    kind = client.type(key)
    if kind == b"hash":
        return b"".join(client.hvals(key))
    if kind == b"zset":
        return b"".join(client.zrange(key, 0, -1))
    if kind == b"set":
        return b"".join(client.smembers(key))
    return client.get(key) or b""
