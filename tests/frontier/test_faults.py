"""Faults a crawl must survive: Redis killed and restarted, SIGTERM, a full stop, slow pages.

Real `scrapy crawl site` processes against a real redis-server (AOF,
``appendfsync always``). Helpers come from ``test_chaos.py``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from statecrawl.demo.site import DemoSite
from tests.conftest import RedisServer, free_port, worker_env
from tests.frontier.test_chaos import (
    Worker,
    check_every_page_once,
    held_by,
    leases_by_pid,
    request_urls,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.slow


def crawl_args(site: DemoSite, crawl_id: str, *settings: str) -> list[str]:
    args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0"]
    for setting in settings:
        args += ["-s", setting]
    return args


def finish(workers: list[Worker], timeout: float) -> str:
    """Wait for every worker to exit; return their logs (killing stragglers)."""
    deadline = time.monotonic() + timeout
    try:
        for w in workers:
            w.proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass  # the caller's return code check reports it, with the logs
    finally:
        for w in workers:
            w.stop()
    return "\n".join(w.log() for w in workers)


def path_of(site: DemoSite, url: str) -> str:
    return url[len(site.url):]


def test_redis_killed_and_restarted_mid_crawl(crawl_id: str, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(free_port(), tmp_path / "redis").start()
    client = server.client()
    k = f"sc:{{{crawl_id}}}:"
    try:
        with DemoSite(pages=1500, delay=0.005) as site:
            args = crawl_args(site, crawl_id)
            workers = [Worker(args, worker_env(server.url, tmp_path / f"w{i}"), tmp_path / f"w{i}.log")
                       for i in range(2)]
            try:
                wait_until(lambda: client.hlen(k + "items") >= 300, 60, "300 items are stored")
                before = client.hlen(k + "items")
                server.stop("kill")
                killed_at = time.monotonic()
                time.sleep(1.0)
                server.start()  # same port and dir: the AOF brings the crawl back
                print(f"redis down for {time.monotonic() - killed_at:.2f}s, {before} items before")
                # appendfsync always: whatever Redis answered before the kill is on disk
                assert client.hlen(k + "items") >= before
                assert client.hget(k + "meta", "state") == b"running"
            finally:
                logs = finish(workers, 90)
            assert [w.proc.returncode for w in workers] == [0, 0], logs
            for w in workers:
                assert "Spider closed (finished)" in w.text(), logs
                assert "Traceback" not in w.text(), logs  # clear lines, no traceback storm
                # with appendfsync always and replayed tokens, Redis holds no lease a
                # live worker does not know about (finished-but-unacked ones count)
                assert "unknown to it" not in w.text(), logs
            check_every_page_once(server, crawl_id, site, tmp_path / "export")
    finally:
        client.close()
        server.stop()


def test_sigterm_gives_leases_back_within_a_second(redis_server: RedisServer, crawl_id: str,
                                                    tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=120, delay=0.3) as site:
        args = crawl_args(site, crawl_id, "CONCURRENT_REQUESTS=8")
        a = Worker(args, worker_env(redis_server.url, tmp_path / "a"), tmp_path / "a.log")
        workers = [a]
        try:
            wait_until(lambda: len(held_by(client, crawl_id, a.pid)) >= 8, 30, "A holds 8 leases")
            b = Worker(args, worker_env(redis_server.url, tmp_path / "b"), tmp_path / "b.log")
            workers.append(b)
            wait_until(lambda: b.pid in {worker_pid(w.decode()) for w in client.zrange(k + "workers", 0, -1)},
                       30, "B has joined")
            held = held_by(client, crawl_id, a.pid)
            a.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            wait_until(lambda: not held_by(client, crawl_id, a.pid) or time.monotonic() - sent > 5,
                       10, "A has no lease", poll=0.01)
            elapsed = time.monotonic() - sent
            still = held_by(client, crawl_id, a.pid)
            assert not still and elapsed <= 1.0, (
                f"{len(still)} leases still held by A {elapsed:.2f}s after SIGTERM "
                f"(held {len(held)} at SIGTERM)\n{a.log()}")
            # what A held is queued again, or leased by B, or already done by B
            queued = {m.decode() for m in client.zrange(k + "queue", 0, -1)}
            owners = leases_by_pid(client, crawl_id)
            for lease in held:
                assert (lease in queued or owners.get(lease) == b.pid
                        or not client.hexists(k + "reqs", lease)), (lease, owners.get(lease))
            print(f"A held {len(held)} leases; none left {elapsed * 1000:.0f} ms after SIGTERM")
            a.proc.wait(30)
        finally:
            logs = finish(workers, 60)
        assert [w.proc.returncode for w in workers] == [0, 0], logs
        assert "Spider closed (shutdown)" in a.text(), logs
        assert "Spider closed (finished)" in b.text(), logs
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export")


def test_stop_everything_then_resume_fetches_nothing_twice(crawl_id: str, tmp_path: Path) -> None:
    """Stop every worker, restart Redis (AOF), start workers again: the crawl continues."""
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(free_port(), tmp_path / "redis").start()
    try:
        _stop_restart_resume(redis_server, crawl_id, tmp_path)
    finally:
        redis_server.stop()


def crawl_state(client: redis.Redis, prefix: str) -> dict[bytes, object]:
    """Every key of a crawl with its content (order-independent, unlike DUMP)."""
    out: dict[bytes, object] = {}
    for key in client.keys(prefix + "*"):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = client.smembers(key)
        elif kind == b"list":
            out[key] = client.lrange(key, 0, -1)
        else:
            out[key] = client.get(key)
    return out


def _stop_restart_resume(redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=1500, delay=0.01) as site:
        args = crawl_args(site, crawl_id)

        def run(name: str, n: int) -> list[Worker]:
            return [Worker(args, worker_env(redis_server.url, tmp_path / f"{name}{i}"),
                           tmp_path / f"{name}{i}.log") for i in range(n)]

        first = run("first", 2)
        try:
            wait_until(lambda: client.hlen(k + "items") >= 400, 60, "400 items are stored")
            in_flight = set(request_urls(client, crawl_id, list(leases_by_pid(client, crawl_id))))
            for w in first:
                w.proc.send_signal(signal.SIGTERM)
            for w in first:
                w.proc.wait(30)
        finally:
            logs = finish(first, 30)
        assert [w.proc.returncode for w in first] == [0, 0], logs
        assert in_flight, "nothing was in flight at the stop"

        # stopped, not finished: nothing in flight, the rest still queued
        assert client.hget(k + "meta", "state") == b"running"
        assert client.hlen(k + "leases") == 0 and client.zcard(k + "workers") == 0
        queued = [m.decode() for m in client.zrange(k + "queue", 0, -1)]
        assert queued and client.hlen(k + "items") < len(site.expected_urls())
        hits_first = dict(site.hits)

        # Redis restarts too (same dir, appendonly): the whole state comes back
        snapshot = crawl_state(client, k)
        client.close()
        redis_server.stop()
        redis_server.start()
        client = redis_server.client()
        assert crawl_state(client, k) == snapshot
        # Leases the stop gave back whose page had been fetched: in flight at the stop
        # (perhaps leased after the snapshot above), so fetched again on resume.
        released = {url for url in request_urls(client, crawl_id, queued).values()
                    if hits_first.get(path_of(site, url))}
        print(f"{len(in_flight)} leased at the snapshot, {len(released)} fetched and given back "
              f"({len(released - in_flight)} of them not in the snapshot), "
              f"{client.hlen(k + 'items')} items stored at the stop")

        second = run("second", 2)
        logs = finish(second, 90)
        assert [w.proc.returncode for w in second] == [0, 0], logs
        assert all("joining crawl" in w.text() for w in second), logs

        refetchable = in_flight | released
        for url in site.expected_urls():
            hits = site.hits[path_of(site, url)]
            if url in refetchable:
                assert 1 <= hits <= 2, (url, hits)
            else:
                assert hits == 1, (url, hits, "not in flight at the stop")
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export")


def test_slow_but_alive_worker_keeps_its_leases(redis_server: RedisServer, crawl_id: str,
                                                tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=12, delay=3.0) as site:  # every page takes 3x the worker timeout
        w = Worker(crawl_args(site, crawl_id), worker_env(redis_server.url, tmp_path / "w"),
                   tmp_path / "w.log")
        logs = finish([w], 80)
        assert w.proc.returncode == 0, logs
        assert client.hget(k + "stats", "reclaimed") in (None, b"0"), logs
        assert "stopped answering" not in w.text() and "declared dead" not in w.text(), logs
        assert "statecrawl/forgotten" not in w.text(), logs
        for url in site.expected_urls():
            assert site.hits[path_of(site, url)] == 1, (url, site.hits)
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export")


def test_sigkilled_worker_leases_come_back_at_once(redis_server: RedisServer, crawl_id: str,
                                                   tmp_path: Path) -> None:
    """The watchdog, not the heartbeat: with a 60 s timeout, only it can be this quick."""
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=200, delay=0.5) as site:
        w = Worker(crawl_args(site, crawl_id, "STATECRAWL_WORKER_TIMEOUT=60",
                              "STATECRAWL_HEARTBEAT_INTERVAL=5"),
                   worker_env(redis_server.url, tmp_path / "w"), tmp_path / "w.log")
        try:
            wait_until(lambda: len(held_by(client, crawl_id, w.pid)) >= 10, 60,
                       "the worker holds 10 leases")
            # Frozen first, so that no ack lands between reading its leases and the kill
            # (a commit already on the socket gets 0.2 s to reach Redis).
            w.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.2)
            held = held_by(client, crawl_id, w.pid)
            t0 = time.monotonic()
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)
            wait_until(lambda: not held_by(client, crawl_id, w.pid), 5, "its leases are back")
            took = time.monotonic() - t0
        finally:
            w.stop()
        queued = {m.decode() for m in client.zrange(k + "queue", 0, -1)}
        assert set(held) <= queued, w.log()
        assert int(client.hget(k + "stats", "reclaimed") or 0) >= len(held)
        assert not [m for m in client.zrange(k + "workers", 0, -1)
                    if worker_pid(m.decode()) == w.pid], "the dead worker is still registered"
        assert took < 5
