"""Heartbeats, reclaim of dead workers' leases, and replay-safe commits and leases."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import redis

from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.liveness import HeartbeatThread
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest
from tests.conftest import ROOT
from tests.conftest import run_store as run


def req(url: str, priority: int = 0) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, -priority, url.encode())


def test_dead_workers_leases_are_reclaimed_exactly_once(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("dead", dedupe="set", requests=[req("a", 3), req("b"), req("c")])
        _, leased = await store.lease("dead", 2, check_finished=False)
        assert [b for _, b in leased] == [b"a", b"b"]
        await store.heartbeat("alive", 0.2)
        first = await store.heartbeat("alive", 10.0)  # "dead" beat just now: not dead yet
        assert first.reclaimed == 0 and first.dead == []
        await asyncio.sleep(0.3)
        # two live workers race to reclaim: exactly one gets the leases
        results = await asyncio.gather(store.heartbeat("alive", 0.2), store.heartbeat("other", 0.2))
        assert sorted(r.reclaimed for r in results) == [0, 2]
        assert [r.dead for r in results if r.reclaimed] == [["dead"]]
        s = await store.status()
        assert (s["queued"], s["in_flight"], s["stats"]["reclaimed"]) == (3, 0, 2)
        _, again = await store.lease("alive", 3, check_finished=False)
        assert [b for _, b in again] == [b"a", b"b", b"c"]  # original priority and order kept
        # the dead worker's late ack is ignored: the lease is someone else's now
        late = await store.commit("dead", dedupe="set", acks=[i for i, _ in leased])
        assert late.acked == 0 and (await store.status())["in_flight"] == 3

    run(redis_url, crawl_id, body)


def test_a_forgotten_worker_learns_it_on_its_next_beat(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[bool, bool]:
        await store.heartbeat("slow", 5.0)
        await asyncio.sleep(0.25)
        await store.heartbeat("fast", 0.2)  # declares "slow" dead
        back = await store.heartbeat("slow", 5.0)
        again = await store.heartbeat("slow", 5.0)
        return back.was_registered, again.was_registered

    assert run(redis_url, crawl_id, body) == (False, True)


def test_resent_commit_is_applied_once(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req("x")])
        _, [(lid, _)] = await store.lease("w", 1, check_finished=False)
        retry = PendingRequest(b"r" * 20, False, 0, b"retry")  # dont_filter: no dedupe to save us
        item = PendingItem("http://x/", False, b'{"url":"http://x/"}')
        first = await store.commit("w", dedupe="set", requests=[retry], items=[item], acks=[lid], token="t1")
        again = await store.commit("w", dedupe="set", requests=[retry], items=[item], acks=[lid], token="t1")
        assert first == again and first.enqueued == 1 and first.acked == 1
        s = await store.status()
        assert s["queued"] == 1 and s["stats"]["enqueued"] == 2
        fresh = await store.commit("w", dedupe="set", requests=[retry], token="t2")
        assert fresh.enqueued == 1

    run(redis_url, crawl_id, body)


def test_resent_lease_returns_the_same_requests(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req(u) for u in "abcd"])
        first = await store.lease("w", 2, check_finished=False, token="L1")
        again = await store.lease("w", 2, check_finished=False, token="L1")
        assert first == again and len(first[1]) == 2
        assert (await store.status())["in_flight"] == 2
        nxt = await store.lease("w", 2, check_finished=False, token="L2")
        assert [b for _, b in nxt[1]] == [b"c", b"d"]

    run(redis_url, crawl_id, body)


def test_leave_gives_back_every_lease_the_worker_holds(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[int, dict[str, Any]]:
        await store.commit("w", dedupe="set", requests=[req(u) for u in "abc"])
        await store.lease("w", 2, check_finished=False)
        n = await store.leave("w")
        return n, await store.status()

    n, s = run(redis_url, crawl_id, body)
    assert n == 2 and (s["queued"], s["in_flight"], s["workers"]) == (3, 0, 0)


_START_WATCHDOG_AND_EXIT = """
import os, sys
import statecrawl.frontier.liveness as liveness
from statecrawl.frontier.keys import CrawlKeys
assert liveness.__file__.startswith(sys.argv[1]), liveness.__file__
liveness.start_watchdog(sys.argv[2], CrawlKeys(sys.argv[3]), "w")
os._exit(0)  # as a worker dies: no leave of its own
"""


def test_watchdog_starts_when_statecrawl_is_imported_from_a_zip(redis_url: str, crawl_id: str,
                                                                tmp_path: Path) -> None:
    """As under scrapyd, whose egg comes before an editable install on ``sys.path``:
    ``_watchdog.py`` has no path of its own there, and the worker's leases must still
    come back when it dies."""
    zipped = tmp_path / "statecrawl.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for path in sorted((ROOT / "statecrawl").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                z.write(path, path.relative_to(ROOT).as_posix())

    async def lease_two(store: CrawlStore) -> None:
        await store.commit("w", dedupe="set", requests=[req(u) for u in "abc"])
        await store.lease("w", 2, check_finished=False)

    run(redis_url, crawl_id, lease_two)
    env = {**os.environ, "PYTHONPATH": str(zipped)}
    subprocess.run([sys.executable, "-c", _START_WATCHDOG_AND_EXIT, str(zipped), redis_url, crawl_id],
                   cwd=tmp_path, env=env, check=True, timeout=60)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 15
    while client.hlen(CrawlKeys(crawl_id).leases) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.hlen(CrawlKeys(crawl_id).leases) == 0
    assert client.hget(CrawlKeys(crawl_id).stats, "reclaimed") == b"2"
    client.close()


def test_heartbeat_thread_beats_while_the_event_loop_is_blocked(redis_server: Any, crawl_id: str) -> None:
    """The reactor can be busy for far longer than the timeout: the thread still beats."""
    keys = CrawlKeys(crawl_id)
    events: list[str] = []
    loop = asyncio.new_event_loop()
    thread = HeartbeatThread(url=redis_server.url, keys=keys, worker="busy", interval=0.05,
                             timeout=0.2, loop=loop, on_reclaimed=lambda n, d: events.append("r"),
                             on_forgotten=lambda: events.append("f"),
                             on_recovered=lambda: events.append("ok"))
    client = redis.Redis(port=redis_server.port)
    thread.start()
    try:
        scores = []
        for _ in range(6):  # block this thread (as a busy reactor would) and watch the score move
            time.sleep(0.15)
            scores.append(client.zscore(keys.workers, "busy"))
        assert all(s is not None for s in scores) and scores == sorted(scores) and scores[0] < scores[-1]
    finally:
        thread.stop()
        thread.join(5)
        loop.close()
        client.close()
    assert not thread.is_alive() and events == []  # alone, it never reclaims or is forgotten


def test_reconcile_gives_back_only_leases_the_worker_does_not_know(redis_url: str,
                                                                     crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[int, int, dict[str, Any]]:
        await store.commit("w", dedupe="set", requests=[req(u) for u in "abcd"])
        _, mine = await store.lease("w", 3, check_finished=False)
        await store.lease("other", 1, check_finished=False)
        released = await store.reconcile("w", [mine[0][0]])  # it lost track of two
        again = await store.reconcile("w", [mine[0][0]])
        return released, again, await store.status()

    released, again, s = run(redis_url, crawl_id, body)
    assert (released, again) == (2, 0)
    assert (s["queued"], s["in_flight"]) == (2, 2)  # w's known lease and other's stay
