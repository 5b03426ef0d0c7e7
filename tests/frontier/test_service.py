"""Service crawls' request/reply path (:mod:`statecrawl.frontier.service`), against a real Redis.

A test stands in for the worker: it leases the request with the crawl's own
lease script, reads its ticket and pushes replies, the way the scrape
spider's middleware and pipeline do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from scrapy import Spider

from statecrawl.frontier.serialize import request_from_json
from statecrawl.frontier.service import (
    SERVICE_META_KEY, ServiceClient, new_request_id, read_ticket, send_reply, service_request,
)
from statecrawl.frontier.store import CrawlStore
from tests.conftest import run_client


class _Served(Spider):
    name = "served"

    def parse(self, response: Any) -> None: ...

    def on_error(self, failure: Any) -> None: ...



def test_a_service_request_is_a_dont_filter_request_for_the_named_methods() -> None:
    raw = service_request("https://e.com/a", callback="parse", errback="on_error",
                          meta={SERVICE_META_KEY: "r1", "opts": {"x": [1]}})
    request = request_from_json(raw, _Served())
    assert request.url == "https://e.com/a" and request.dont_filter
    assert request.callback.__name__ == "parse" and request.errback.__name__ == "on_error"
    assert request.meta[SERVICE_META_KEY] == "r1" and request.meta["opts"] == {"x": [1]}


async def _worker(store: CrawlStore, client: Redis, replies: int, got: dict[str, Any]) -> None:
    """Lease one request, read its ticket, push *replies* replies."""
    while True:
        _state, pairs = await store.lease("w1", 1, check_finished=False)
        if pairs:
            break
        await asyncio.sleep(0.01)
    request = request_from_json(pairs[0][1], _Served())
    request_id = request.meta[SERVICE_META_KEY]
    got["ticket"] = await read_ticket(client, store, request_id)
    got["pushed"] = [await send_reply(client, store, request_id, f"reply {i}".encode())
                     for i in range(replies)]
    got["id"] = request_id


async def _served_call(caller: ServiceClient, worker_store: CrawlStore, client: Redis,
                       secret: bytes, replies: int) -> tuple[str, bytes | None, dict[str, Any]]:
    """One call, served by a worker that opens the crawl once the caller made it and pushes
    *replies* replies: (request id, the reply the caller took, what the worker saw)."""
    request_id = new_request_id()
    raw = service_request("https://e.com/", callback="parse", errback=None,
                          meta={SERVICE_META_KEY: request_id})
    got: dict[str, Any] = {}

    async def serve() -> None:
        while not await client.exists(worker_store.keys.meta):
            await asyncio.sleep(0.01)
        await worker_store.open_crawl(spider="served")
        await _worker(worker_store, client, replies, got)

    reply, _ = await asyncio.gather(caller.call(request_id, raw, secret, 5.0), serve())
    return request_id, reply, got


def test_the_caller_takes_the_first_reply_and_leaves_nothing(redis_url: str, crawl_id: str) -> None:
    async def body(client: Redis) -> None:
        caller = ServiceClient(client, crawl_id, spider="served")
        worker_store = CrawlStore(client, crawl_id)
        # the worker pushes twice: a re-fetch after a death
        request_id, reply, got = await _served_call(caller, worker_store, client, b"sealed", 2)
        assert reply == b"reply 0" and got["ticket"] == b"sealed"
        # the first push deleted the ticket: the second (a re-fetch after a death) is refused,
        # so the list held one reply, which the caller took
        assert got["pushed"] == [True, False]
        k = worker_store.keys
        assert not await client.exists(k.ticket(request_id), k.reply(request_id))
        # a reply pushed after the caller is done finds no ticket: nothing is written
        assert not await send_reply(client, worker_store, request_id, b"late")
        assert not await client.exists(k.reply(request_id))
        await caller.close()
        assert not await client.hexists(k.tokens, caller.writer)

    run_client(redis_url, body)


def test_a_reply_expires_when_nobody_takes_it(redis_url: str, crawl_id: str) -> None:
    async def body(client: Redis) -> None:
        store = CrawlStore(client, crawl_id)
        await client.set(store.keys.ticket("r"), b"", px=10_000)
        assert await send_reply(client, store, "r", b"x", ttl=0.5)
        assert 0 < await client.pttl(store.keys.reply("r")) <= 500

    run_client(redis_url, body)


def test_no_reply_is_none_after_the_timeout_and_each_call_is_enqueued(
        redis_url: str, crawl_id: str) -> None:
    async def body(client: Redis) -> None:
        caller = ServiceClient(client, crawl_id, spider="served")
        loop = asyncio.get_running_loop()
        for _ in range(2):  # the same URL twice: two requests in the frontier
            request_id = new_request_id()
            raw = service_request("https://e.com/same", callback="parse", errback=None,
                                  meta={SERVICE_META_KEY: request_id})
            started = loop.time()
            assert await caller.call(request_id, raw, b"", 0.3) is None
            assert 0.29 < loop.time() - started < 1.0
            assert await read_ticket(client, caller.store, request_id) is None  # deleted
        assert (await caller.store.status())["queued"] == 2
        await caller.close()

    run_client(redis_url, body)


def test_a_call_survives_redis_losing_the_script_or_the_crawl(redis_url: str, crawl_id: str) -> None:
    """The ticket and the request go in one pipeline once the crawl is open; a Redis that
    forgot the commit script (restart) or the crawl (flush) costs the slow path, no call."""
    async def body(client: Redis) -> None:
        caller = ServiceClient(client, crawl_id, spider="served")
        worker_store = CrawlStore(client, crawl_id)

        async def one() -> None:
            request_id, reply, got = await _served_call(caller, worker_store, client, b"s", 1)
            assert reply == b"reply 0" and got["ticket"] == b"s" and got["id"] == request_id
            k = worker_store.keys
            assert not await client.exists(k.ticket(request_id), k.reply(request_id))

        await one()  # opens the crawl, loads the script
        await one()  # the pipelined path
        await client.script_flush()
        await one()
        await client.delete(*worker_store.keys.all())  # the crawl is gone (flushed, deleted)
        await one()
        await caller.close()

    run_client(redis_url, body)
