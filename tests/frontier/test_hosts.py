"""The fleet-wide politeness budget in Redis (lua/polite.lua and friends), one call at a time."""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import urlsplit

import pytest

from statecrawl.frontier.hosts import Budget, HostBudgetStore, RedisClock, parse_slot
from statecrawl.frontier.store import CrawlStore, PendingRequest
from tests.conftest import run_store


def _req(url: str, priority: int = 0) -> PendingRequest:
    body = json.dumps({"v": 1, "url": url}).encode()
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, -priority, body)


def _slots(pairs: list[tuple[str, bytes]]) -> list[tuple[str, str, int, int]]:
    """(id, host, at, now) of each polite lease."""
    out = []
    for lease, _ in pairs:
        rid, at, now, host = lease.split(" ", 3)
        out.append((rid, host, int(at), int(now)))
    return out


async def _seed(store: CrawlStore, worker: str, host: str, n: int) -> list[tuple[str, bytes]]:
    """Commit n requests of *host* as *worker*, then lease as many as it may have."""
    await store.commit(worker, dedupe="exact",
                       requests=[_req(f"http://{host}/{i}") for i in range(n)])
    return (await store.lease(worker, 10, check_finished=False))[1]


async def _polite(store: CrawlStore, **budget: object) -> HostBudgetStore:
    hosts = HostBudgetStore(store.client, store.keys)
    await hosts.configure(Budget(**budget))  # type: ignore[arg-type]
    return hosts


def test_slots_of_one_host_are_a_delay_apart_and_a_waiting_host_stalls_no_other(
        redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await _polite(store, delay=0.2, horizon=0.5, late=0.0)
        urls = [f"http://a.test/{i}" for i in range(6)] + [f"http://b.test/{i}" for i in range(3)]
        await store.commit("w", dedupe="exact", requests=[_req(u) for u in urls])
        state, pairs = await store.lease("w", 20, check_finished=False)
        slots = _slots(pairs)
        a = sorted(at for _, host, at, _ in slots if host == "a.test")
        now = slots[0][3]
        # a.test: now, +200, +400 (within the 500 ms horizon), no more
        assert [at - now for at in a] == [0, 200, 400]
        # b.test has a delay too, but is not held behind a.test
        b = sorted(at for _, host, at, _ in slots if host == "b.test")
        assert [at - now for at in b] == [0, 200, 400]
        # the next lease hands out nothing until a.test is due within the horizon again
        _, more = await store.lease("w", 20, check_finished=False)
        assert all(at - now >= 600 for _, _, at, _ in _slots(more))
        assert (await store.status())["queued"] == 9 - len(slots) - len(more)

    run_store(redis_url, crawl_id, body)


def test_concurrency_cap_parks_a_host_until_a_lease_ends(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await _polite(store, concurrency=2)
        pairs = await _seed(store, "w", "a.test", 5)
        assert len(pairs) == 2
        assert (await store.lease("w", 10, check_finished=False))[1] == []
        first = pairs[0][0].split()[0]
        await store.commit("w", dedupe="exact", acks=[first])
        _, again = await store.lease("w", 10, check_finished=False)
        assert len(again) == 1
        # a worker that stops gives its leases back, and the host its slots
        held = [pairs[1][0].split()[0], again[0][0].split()[0]]
        assert await store.release("w", held) == 2
        hosts = await store.client.hgetall(store.keys.hosts)
        assert b"a.test|n" not in hosts  # none in flight: the field goes
        _, after = await store.lease("w2", 10, check_finished=False)
        assert len(after) == 2

    run_store(redis_url, crawl_id, body)


def test_reclaimed_leases_free_their_host(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await _polite(store, concurrency=1)
        pairs = await _seed(store, "dead", "a.test", 3)
        assert len(pairs) == 1
        await asyncio.sleep(0.05)
        beat = await store.heartbeat("alive", 0.02)  # "dead" is overdue
        assert beat.reclaimed == 1
        _, pairs = await store.lease("alive", 10, check_finished=False)
        assert len(pairs) == 1  # the cap holds, and the dead worker's slot is free

    run_store(redis_url, crawl_id, body)


def test_backoff_with_retry_after_moves_the_host_for_everyone(redis_url: str,
                                                              crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        hosts = await _polite(store, delay=0.0)
        await store.commit("w", dedupe="exact",
                           requests=[_req(f"http://a.test/{i}") for i in range(3)])
        until, now, level = await hosts.backoff("a.test", 2.0, 1.0, 300.0)
        assert until - now == 2000 and level == 1
        _, pairs = await store.lease("w", 10, check_finished=False)
        assert pairs == []  # not due within the horizon
        at, now = await hosts.slot("a.test")
        assert at - now >= 1990
        # without Retry-After, the first answer only counts; the second waits
        assert (await hosts.backoff("b.test", None, 1.0, 300.0))[0] == 0
        until, now, level = await hosts.backoff("b.test", None, 1.0, 300.0)
        assert (until - now, level) == (1000, 2)
        # an answer other than 429/503 ends the run
        await hosts.observe({"b.test": [1, 1, 0.1]})
        assert await store.client.hget(store.keys.hosts, "b.test|b") is None

    run_store(redis_url, crawl_id, body)


def test_overrides_change_the_budget_while_the_crawl_runs(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        hosts = await _polite(store, delay=0.1, horizon=2.0, late=0.005)
        await hosts.set_override("a.test", delay=0.5)
        await store.commit("w", dedupe="exact",
                           requests=[_req(f"http://{h}/{i}") for h in ("a.test", "b.test")
                                     for i in range(3)])
        _, pairs = await store.lease("w", 10, check_finished=False)
        by_host: dict[str, list[int]] = {}
        for _, host, at, _ in _slots(pairs):
            by_host.setdefault(host, []).append(at)
        # each slot is the delay plus the 5 ms a worker may be late apart
        assert [b - a for a, b in zip(by_host["a.test"], by_host["a.test"][1:])] == [505, 505]
        assert [b - a for a, b in zip(by_host["b.test"], by_host["b.test"][1:])] == [105, 105]

    run_store(redis_url, crawl_id, body)


def test_autothrottle_follows_the_latency_workers_report(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        hosts = await _polite(store, autothrottle=True, at_target=2.0, at_start=1.0, at_max=10.0,
                              late=0.0)
        # Scrapy's rule: target = 0.8 / 2 = 0.4; (1.0 + 0.4) / 2 = 0.7
        await hosts.observe({"a.test": [4, 4, 3.2]})
        assert await store.client.hget(store.keys.hosts, "a.test|a") == b"700"
        # answers that are not 200 never lower it
        await hosts.observe({"a.test": [1, 0, 0.0]})
        assert await store.client.hget(store.keys.hosts, "a.test|a") == b"700"
        at, now = await hosts.slot("a.test")
        at2, _ = await hosts.slot("a.test")
        assert at2 - at == 700

    run_store(redis_url, crawl_id, body)


def test_finished_waits_for_the_host_queues(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await _polite(store, delay=5.0, horizon=0.1)
        await store.commit("w", dedupe="exact",
                           requests=[_req(f"http://a.test/{i}") for i in range(2)])
        state, pairs = await store.lease("w", 10, check_finished=True)
        assert len(pairs) == 1
        await store.commit("w", dedupe="exact", acks=[pairs[0][0].split()[0]])
        state, pairs = await store.lease("w", 10, check_finished=True)
        assert (state, pairs) == ("running", [])  # one request waits for its host

    run_store(redis_url, crawl_id, body)


@pytest.mark.parametrize("url", [
    "http://Example.COM/a", "https://user:pw@example.com:8443/x?y#z", "http://[::1]:8080/",
    "http://127.0.0.2:9/p", "https://xn--bcher-kva.example/", "http://a.test",
])
def test_the_host_is_pythons_hostname(redis_url: str, crawl_id: str, url: str) -> None:
    async def body(store: CrawlStore) -> None:
        await _polite(store)
        await store.commit("w", dedupe="exact", requests=[_req(url)])
        _, pairs = await store.lease("w", 1, check_finished=False)
        rid, slot = parse_slot(pairs[0][0], RedisClock())
        assert slot is not None and slot[0] == urlsplit(url).hostname

    run_store(redis_url, crawl_id, body)


def test_a_plain_crawl_is_unchanged(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="exact", requests=[_req("http://a.test/1")])
        _, pairs = await store.lease("w", 5, check_finished=False)
        assert [" " in lease for lease, _ in pairs] == [False]
        assert await store.client.exists(store.keys.hosts) == 0

    run_store(redis_url, crawl_id, body)
