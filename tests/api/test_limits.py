"""Per-key rate and concurrency limits: real ``statecrawl serve`` processes on the session's Redis.

Two servers on one Redis stand for a fleet behind a round-robin balancer: the
tests alternate between them and the limits hold for the two together. A
request holds a concurrency slot with a scrape nobody serves (no scrape
worker runs): it waits for its ``timeout``, then answers 408.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from statecrawl.api.limits import Limiter, parse_concurrency, parse_rate_limit
from statecrawl.exceptions import ConfigError
from tests.api._serve import Serve, http, serve, serve_command, serve_env
from tests.conftest import ROOT, RedisServer, free_port, run_client

T = TypeVar("T")
SLOW_SCRAPE = {"url": "http://127.0.0.1:1/", "timeout": 3000}  # nobody serves it: 408 after 3 s


@contextmanager
def fleet(redis_url: str, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[list[Serve]]:
    """Two API servers on one Redis, each with its own scrape crawl nobody serves."""
    env = {"STATECRAWL_API_SCRAPE_CRAWL": "lim-" + uuid.uuid4().hex[:8], **(env or {})}
    with ExitStack() as stack:
        yield [stack.enter_context(serve(redis_url, tmp, *args, env=env)) for _ in range(2)]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def until(check: Callable[[], T], timeout: float = 5.0) -> T:
    """*check*'s first true value, asked every 20 ms for at most *timeout* s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(0.02)
    return value


def test_limits_are_off_by_default(redis_server: RedisServer, tmp_path: Path) -> None:
    with serve(redis_server.url, tmp_path) as api:
        for _ in range(40):
            status, _body, headers = http("GET", f"{api.url}/v2/crawl/active")
            assert status == 200 and "x-ratelimit-limit" not in headers
    assert not redis_server.client().keys("sc:api:rate:*")


@pytest.mark.slow
def test_the_rate_is_limited_per_key_across_servers(redis_server: RedisServer, tmp_path: Path) -> None:
    client = redis_server.client()
    keys = ["k1-" + uuid.uuid4().hex, "k2-" + uuid.uuid4().hex]
    # 12/min: a burst of 12, then one every 5 s; one server reads the option, the other the variable
    env = {"STATECRAWL_API_KEYS": ",".join(keys)}
    with ExitStack() as stack:
        one = stack.enter_context(serve(redis_server.url, tmp_path, "--rate-limit", "12", env=env))
        two = stack.enter_context(serve(redis_server.url, tmp_path,
                                        env={**env, "STATECRAWL_API_RATE_LIMIT": "12"}))
        servers = (one, two)
        started = time.monotonic()
        left = []
        for turn in range(12):  # the burst, alternating between the two servers
            status, _body, headers = http("GET", f"{servers[turn % 2].url}/v2/crawl/active",
                                          headers=bearer(keys[0]))
            assert status == 200 and headers["x-ratelimit-limit"] == "12", turn
            left.append(int(headers["x-ratelimit-remaining"]))
        status, body, headers = http("GET", f"{one.url}/v2/crawl/active", headers=bearer(keys[0]))
        assert time.monotonic() - started < 4, "too slow to see the burst end (one token per 5 s)"
        assert left == list(range(11, -1, -1))
        assert status == 429 and body["success"] is False and body["code"] == "RATE_LIMITED"
        assert body["error"].startswith("Rate limit exceeded. Consumed (req/min): 12, Remaining "
                                        "(req/min): 0. Please retry after ")
        retry = int(headers["retry-after"])
        assert 1 <= retry <= 5 and f"retry after {retry}s" in body["error"]
        assert headers["x-ratelimit-remaining"] == "0"
        assert http("GET", f"{two.url}/v2/crawl/active", headers=bearer(keys[0]))[0] == 429
        # another key has its own bucket; the schema and a 401 count against nothing
        assert http("GET", f"{two.url}/v2/crawl/active", headers=bearer(keys[1]))[0] == 200
        assert client.pttl(f"sc:api:rate:{{{key_id(keys[1])}}}") > 0  # until its burst is whole
        for _ in range(3):
            assert http("GET", f"{one.url}/openapi.json", headers=bearer(keys[0]))[0] == 200
            assert http("GET", f"{one.url}/v2/crawl/active", headers=bearer("wrong"))[0] == 401
        time.sleep(retry)
        assert http("GET", f"{two.url}/v2/crawl/active", headers=bearer(keys[0]))[0] == 200
    assert not [n for n in client.keys("sc:api:*") if any(k.encode() in n for k in keys)]
    assert 0 < client.pttl(f"sc:api:rate:{{{key_id(keys[0])}}}") <= 65_000


@pytest.mark.slow
def test_concurrency_is_limited_across_servers_and_a_slot_is_freed(redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    inflight = "sc:api:inflight:{addr-127.0.0.1}"  # no API keys: one bucket per client address
    client = redis_server.client()
    client.delete(inflight)
    with fleet(redis_server.url, tmp_path, "--concurrency", "2") as (one, two):
        answers: list[tuple[int, Any, Any]] = []
        slow = [threading.Thread(target=lambda s=s: answers.append(
            http("POST", f"{s.url}/v2/scrape", SLOW_SCRAPE, timeout=15))) for s in (one, two)]
        for thread in slow:
            thread.start()
        try:
            until(lambda: client.zcard(inflight) == 2)
            for server in (one, two):  # a third request, to either server, finds no slot
                status, body, headers = http("GET", f"{server.url}/v2/crawl/active")
                assert (status, body["code"], headers["retry-after"]) == (429, "CONCURRENCY_LIMITED", "1")
                assert body["error"].startswith("Concurrency limit exceeded: 2 requests are already in flight")
            assert http("GET", f"{one.url}/openapi.json")[0] == 200
        finally:
            for thread in slow:
                thread.join(15)
        assert sorted(a[0] for a in answers) == [408, 408]
        assert client.zcard(inflight) == 0  # each slot left with its response
        status, _body, headers = http("GET", f"{two.url}/v2/crawl/active")
        assert status == 200 and "x-ratelimit-limit" not in headers
        # one slow request holds one slot: the other is free, on both servers
        holder = threading.Thread(target=lambda: answers.append(
            http("POST", f"{one.url}/v2/scrape", SLOW_SCRAPE, timeout=15)))
        holder.start()
        try:
            until(lambda: client.zcard(inflight) == 1)
            # a slot is given back before the response's last byte: back-to-back requests never 429
            assert {http("GET", f"{(two, one)[turn % 2].url}/v2/crawl/active")[0]
                    for turn in range(20)} == {200}
        finally:
            holder.join(15)
    assert client.zcard(inflight) == 0



def test_the_limiter_in_redis(redis_url: str) -> None:
    """The script alone: exact GCRA counts, refusals spend nothing, dead requests' leases lapse."""
    who = "addr-test-" + uuid.uuid4().hex[:6]

    async def body(client: Redis) -> None:
        rate = Limiter(client, rate_limit=3)  # one per 20 s: nothing refills during the test
        verdicts = [await rate.enter(who + "r", str(i)) for i in range(5)]
        assert [(v.code, v.left) for v in verdicts] == [
            (None, 2), (None, 1), (None, 0), ("RATE_LIMITED", 0), ("RATE_LIMITED", 0)]
        assert 19 < verdicts[3].retry_after <= 20

        both = Limiter(client, rate_limit=3, concurrency=1, lease=0.4)
        assert (await both.enter(who, "a")).code is None
        refused = await both.enter(who, "b")
        assert (refused.code, refused.in_flight) == ("CONCURRENCY_LIMITED", 1)
        await both.leave(who, "a")
        assert (await both.enter(who, "c")).left == 1  # b spent no rate token
        assert (await both.enter(who, "d")).code == "CONCURRENCY_LIMITED"
        await both.renew(who, "c")  # c stays in flight past its first lease; nobody renews d
        await asyncio.sleep(0.3)
        await both.renew(who, "c")
        await asyncio.sleep(0.2)
        assert (await both.enter(who, "e")).code == "CONCURRENCY_LIMITED"  # c still holds the slot
        await asyncio.sleep(0.5)  # c's process "died": its lease lapsed, and f's entry drops it
        f = await both.enter(who, "f")
        assert (f.code, f.left) == (None, 0)  # the third rate token: a, c, f
        assert await client.zrange(Limiter.keys(who)[1], 0, -1) == [b"f"]
        await both.leave(who, "f")
        assert (await both.enter(who, "g")).code == "RATE_LIMITED"
        assert await client.zcard(Limiter.keys(who)[1]) == 0

    run_client(redis_url, body)


@pytest.mark.slow
def test_redis_down_lets_requests_through(tmp_path: Path) -> None:
    own = RedisServer(free_port(), tmp_path).start()
    try:
        with serve(own.url, tmp_path, "--rate-limit", "3", "--concurrency", "1") as api:
            for _ in range(3):
                assert http("GET", f"{api.url}/v2/crawl/active")[0] == 200
            assert http("GET", f"{api.url}/v2/crawl/active")[0] == 429
            own.stop("kill")
            status, body, _ = http("GET", f"{api.url}/v2/crawl/active", timeout=30)
            assert (status, body["code"]) == (503, "REDIS_UNAVAILABLE")  # the route's answer, not ours
            assert http("GET", f"{api.url}/openapi.json")[0] == 200
            own.start()  # the limits are asked again OPEN_FOR (5 s) after the error
            until(lambda: http("GET", f"{api.url}/v2/crawl/active", timeout=5)[0] == 429, timeout=10)
            output = api.output()
        assert ("limits per client address, for every API process on this Redis: 3 requests/min, "
                "1 in flight") in output
        assert "API rate and concurrency limits not enforced for 5 s: Redis error" in output
        assert output.count("limits not enforced") == 1 and "Traceback" not in output
    finally:
        own.stop()


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"STATECRAWL_API_RATE_LIMIT": "-1"}, (), "STATECRAWL_API_RATE_LIMIT='-1': give the requests "
                                              "per minute per API key as a whole number"),
    ({"STATECRAWL_API_RATE_LIMIT": "ten"}, (), "STATECRAWL_API_RATE_LIMIT='ten'"),
    ({"STATECRAWL_API_CONCURRENCY": "1.5"}, (), "STATECRAWL_API_CONCURRENCY='1.5': give the "
                                                "requests in flight at once per API key"),
    ({}, ("--rate-limit", "-2"), "argument --rate-limit: must be at least 0, got -2"),
    ({}, ("--concurrency", "x"), "argument --concurrency: expected a whole number, got 'x'"),
])
def test_bad_settings_are_config_errors(redis_url: str, env: dict[str, str], args: tuple[str, ...],
                                        message: str) -> None:
    done = subprocess.run(serve_command(redis_url, free_port(), *args), cwd=ROOT,
                          env=serve_env(**env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_parsing_the_settings() -> None:
    assert [parse_rate_limit(v) for v in (None, "", "0", " 60 ", 7)] == [0, 0, 0, 60, 7]
    assert parse_concurrency("4") == 4
    for bad in ("-1", "1e3", "many"):
        with pytest.raises(ConfigError, match="0: no limit"):
            parse_concurrency(bad)
