"""The crawl state in Redis: frontier order, leases, atomic commits, limit, finish."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest
from tests.conftest import run_store as run


def req(url: str, priority: int = 0, *, filter: bool = True) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), filter, -priority, url.encode())


def test_frontier_pops_by_priority_then_fifo(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> list[bytes]:
        reqs = [req("a"), req("b", 5), req("c"), req("d", 5), req("e", -1)]
        await store.commit("w1", dedupe="set", requests=reqs)
        _, pairs = await store.lease("w1", 10, check_finished=False)
        return [b for _, b in pairs]

    assert run(redis_url, crawl_id, body) == [b"b", b"d", b"a", b"c", b"e"]


def test_dupefilter_in_commit_batch(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[Any, Any, int, dict]:
        first = await store.commit("w", dedupe="set", requests=[req("a"), req("b"), req("a")])
        second = await store.commit("w", dedupe="set", requests=[req("b"), req("a", filter=False)])
        status = await store.status()
        return first, second, await store.client.scard(store.keys.seen), status

    first, second, seen, status = run(redis_url, crawl_id, body)
    assert (first.enqueued, first.duplicates) == (2, 1)
    assert (second.enqueued, second.duplicates) == (1, 1)  # dont_filter bypasses the set
    assert seen == 2 and status["seen"] == 2 and status["queued"] == 3


def test_dedupe_none_mode_enqueues_everything(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> Any:
        return await store.commit("w", dedupe="none", requests=[req("a"), req("a")])

    assert run(redis_url, crawl_id, body).enqueued == 2


def test_lease_ack_lifecycle_and_finish(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w1", dedupe="set", requests=[req("a"), req("b")])
        state, pairs = await store.lease("w1", 1, check_finished=True)
        assert state == "running" and len(pairs) == 1
        (lid, _), = pairs
        s = await store.status()
        assert (s["queued"], s["in_flight"], s["workers"]) == (1, 1, 1)
        # another worker cannot acknowledge w1's lease
        assert (await store.commit("w2", dedupe="set", acks=[lid])).acked == 0
        # commit output and ack together
        item = PendingItem("http://a/", False, b'{"url":"http://a/"}')
        result = await store.commit("w1", dedupe="set", requests=[req("c")], items=[item], acks=[lid])
        assert (result.enqueued, result.acked) == (1, 1)
        assert await store.client.hget(store.keys.reqs, lid) is None
        # drain the rest
        _, pairs = await store.lease("w1", 10, check_finished=True)
        assert len(pairs) == 2
        state, none = await store.lease("w2", 10, check_finished=True)
        assert state == "running" and none == []  # w1 still holds two leases
        await store.commit("w1", dedupe="set", acks=[i for i, _ in pairs])
        state, _ = await store.lease("w2", 10, check_finished=False)
        assert state == "running"  # nobody asked for the finish check
        state, _ = await store.lease("w2", 10, check_finished=True)
        assert state == "finished"
        s = await store.status()
        assert s["state"] == "finished" and s["finished_at"] and s["done"] == 1
        assert s["stats"]["acked"] == 3 and s["stats"]["leased"] == 3
        # new work re-opens a finished crawl
        await store.commit("w1", dedupe="set", requests=[req("z")])
        assert (await store.status())["state"] == "running"

    run(redis_url, crawl_id, body)


def test_release_returns_leases_with_their_priority(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w1", dedupe="set", requests=[req("hi", 9), req("lo", 1)])
        _, pairs = await store.lease("w1", 2, check_finished=False)
        assert await store.release("w2", [i for i, _ in pairs]) == 0  # not w2's
        assert await store.release("w1", [i for i, _ in pairs]) == 2
        _, again = await store.lease("w2", 2, check_finished=False)
        assert [b for _, b in again] == [b"hi", b"lo"]
        assert (await store.status())["stats"]["released"] == 2

    run(redis_url, crawl_id, body)


def test_items_are_idempotent_by_key_and_failed_set_tracks_latest(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> dict:
        bad = PendingItem("http://x/", True, b'{"url":"http://x/","error":{"type":"E"}}')
        good = PendingItem("http://x/", False, b'{"url":"http://x/","error":null}')
        await store.commit("w", dedupe="set", items=[bad])
        assert (await store.status())["failed"] == 1
        await store.commit("w", dedupe="set", items=[good, good])
        items = [i async for i in store.iter_items()]
        assert items == [("http://x/", {"url": "http://x/", "error": None})]
        return await store.status()

    s = run(redis_url, crawl_id, body)
    assert (s["done"], s["failed"]) == (1, 0)


def test_limit_caps_admitted_requests_crawl_wide(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[Any, Any]:
        await store.open_crawl(spider="test", limit=3)
        a = await store.commit("w1", dedupe="set", requests=[req("a"), req("b")])
        b = await store.commit("w2", dedupe="set", requests=[req("c"), req("d"), req("a")])
        return a, b

    a, b = run(redis_url, crawl_id, body)
    assert (a.enqueued, b.enqueued, b.limit_dropped, b.duplicates) == (2, 1, 1, 1)


def test_requests_that_do_not_count_first_leave_the_whole_limit(redis_url: str,
                                                                crawl_id: str) -> None:
    """robots.txt or sitemaps committed before any page: the limit is still all pages'
    (the admitted count once started from `enqueued`, meant for crawls older than it)."""
    async def body(store: CrawlStore) -> tuple[Any, Any]:
        await store.open_crawl(spider="test", limit=5)
        aux = [dataclasses.replace(req(f"sitemap{i}"), counted=False) for i in range(3)]
        a = await store.commit("w", dedupe="exact", requests=aux)
        b = await store.commit("w", dedupe="exact", requests=[req(f"p{i}") for i in range(10)])
        return a, b

    a, b = run(redis_url, crawl_id, body)
    assert (a.enqueued, b.enqueued, b.limit_dropped) == (3, 5, 5)


def test_cancel_stops_leasing(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[str, list]:
        await store.commit("w", dedupe="set", requests=[req("a")])
        assert await store.cancel()
        return await store.lease("w", 5, check_finished=True)

    state, pairs = run(redis_url, crawl_id, body)
    assert state == "cancelled" and pairs == []


def test_commit_is_one_round_trip_for_many_links(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[int, list[str]]:
        await store.commit("w", dedupe="set")  # loads the script once
        sent: list[str] = []
        original = store.client.execute_command

        async def counting(*args: Any, **kwargs: Any) -> Any:
            sent.append(str(args[0]))
            return await original(*args, **kwargs)

        store.client.execute_command = counting  # type: ignore[method-assign]
        result = await store.commit("w", dedupe="set", requests=[req(f"u{i}") for i in range(300)])
        return result.enqueued, sent

    enqueued, sent = run(redis_url, crawl_id, body)
    assert enqueued == 300 and sent == ["EVALSHA"]


def test_invalid_crawl_id_is_refused() -> None:
    from statecrawl.exceptions import ConfigError
    from statecrawl.frontier.keys import CrawlKeys

    for bad in ("", "a b", "x" * 65, "a}b", "../x"):
        with pytest.raises(ConfigError):
            CrawlKeys(bad)


def test_commit_leases_what_it_is_asked_for_once_per_token(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req("a"), req("b", 5)])
        first = await store.commit("w", dedupe="set", requests=[req("c")], want=2, token="t1")
        # the new request is enqueued before the lease, so it competes by priority
        assert [b for _, b in first.leased] == [b"b", b"a"]
        assert first.enqueued == 1
        # a replay (lost reply) returns the same leases and leases nothing more
        again = await store.commit("w", dedupe="set", requests=[req("c")], want=2, token="t1")
        assert again.leased == first.leased
        s = await store.status()
        assert (s["queued"], s["in_flight"], s["stats"]["leased"]) == (1, 2, 2)
        # acks and the next lease in one call; nothing asked, nothing leased
        lids = [lid for lid, _ in first.leased]
        done = await store.commit("w", dedupe="set", acks=lids, want=5)
        assert done.acked == 2 and [b for _, b in done.leased] == [b"c"]
        assert (await store.commit("w", dedupe="set", want=0)).leased == ()

    run(redis_url, crawl_id, body)


def test_commit_leases_nothing_from_a_cancelled_crawl(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req("a")])
        await store.cancel()
        assert (await store.commit("w", dedupe="set", want=3)).leased == ()

    run(redis_url, crawl_id, body)
