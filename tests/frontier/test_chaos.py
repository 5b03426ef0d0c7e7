"""Chaos: a worker SIGKILLed again and again mid-crawl loses nothing and duplicates nothing.

Two `scrapy crawl site` processes share one crawl; one of them (the victim) is
SIGKILLed at random moments while it holds leases, and restarted each time as
a new process on the same crawl id. Both ways a dead worker is found are
exercised: at even kills the victim's watchdog sees it die and gives its
leases back at once; at odd kills the watchdog is SIGKILLed first (as when a
whole machine is lost), so the survivor's heartbeat declares the victim dead
after ``STATECRAWL_WORKER_TIMEOUT``. At the end every URL of the site is in
the crawl's items exactly once, in Redis and in ``statecrawl export``.

The kill times come from a seeded random: the seed is printed (shown by pytest
on failure) and can be replayed with ``STATECRAWL_CHAOS_SEED=<seed>``.

The helpers here are shared with ``test_faults.py``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from statecrawl import cli
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.packing import RequestCodec
from tests.conftest import ROOT, RedisServer, worker_env

pytestmark = pytest.mark.slow

KILLS = 3

#: Disallowed by robots.txt. Scrapy 2.19's own middleware let it through for
#: requests that waited for robots.txt; statecrawl.frontier.robots fixes that, and these
#: tests check it is never fetched.
ROBOTS_PATH = "/private/secret.html"


class Server(Protocol):
    """What these helpers need of a Redis: its URL and a blocking client (a RedisServer, or a
    local Redis Cluster: tests/cluster)."""

    @property
    def url(self) -> str: ...

    def client(self) -> Any: ...


class Worker:
    """One `scrapy crawl site` process whose output goes to a log file (no pipe to fill)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scrapy", "crawl", "site", *args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self, tail: int = 3000) -> str:
        return f"--- {self.log_path.name} (rc={self.proc.returncode}) ---\n{self.text()[-tail:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def watchdogs_of(pid: int) -> list[int]:
    """The watchdog processes the worker process *pid* started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"_watchdog.py" in cmdline:
            found.append(int(entry.name))
    assert found, f"worker {pid} has no watchdog"
    return found


def worker_pid(worker_id: str) -> int:
    """The pid in a worker id ``<hostname>-<pid>-<hex>`` (the hostname may hold dashes)."""
    return int(worker_id.rsplit("-", 2)[1])


def leases_by_pid(client: redis.Redis, crawl_id: str) -> dict[str, int]:
    """The in-flight set: lease id -> pid of the worker holding it."""
    raw = client.hgetall(f"sc:{{{crawl_id}}}:leases")
    return {lid.decode(): worker_pid(v.decode().rsplit(" ", 1)[0]) for lid, v in raw.items()}


def held_by(client: redis.Redis, crawl_id: str, pid: int) -> list[str]:
    return [lid for lid, owner in leases_by_pid(client, crawl_id).items() if owner == pid]


def request_urls(client: redis.Redis, crawl_id: str, ids: list[str]) -> dict[str, str]:
    """Lease/request id -> URL, from the reqs hash (ids already acknowledged are left out)."""
    if not ids:
        return {}
    bodies = client.hmget(f"sc:{{{crawl_id}}}:reqs", ids)
    codec = RequestCodec(client.get(f"sc:{{{crawl_id}}}:zdict"))  # requests are stored packed
    return {i: json.loads(codec.unpack(b))["url"] for i, b in zip(ids, bodies) if b is not None}


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        time.sleep(poll)


def check_every_page_once(server: Server, crawl_id: str, site: DemoSite, out: Path,
                          context: str = "") -> None:
    """The crawl is complete and drained, and Redis and `statecrawl export` hold each URL once."""
    client = server.client()
    k = f"sc:{{{crawl_id}}}:"
    expected = site.expected_urls()
    stored = {key.decode() for key in client.hkeys(k + "items")}
    assert site.url + ROBOTS_PATH not in stored, f"{context} robots.txt was not obeyed"
    assert stored == expected, (f"{context} missing {sorted(expected - stored)[:10]}, "
                                f"extra {sorted(stored - expected)[:10]}")
    assert client.hlen(k + "leases") == 0 and client.zcard(k + "queue") == 0, context
    assert client.hlen(k + "reqs") == 0, context
    assert client.hget(k + "meta", "state") == b"finished", context

    assert cli.main(["--redis-url", server.url, "export", crawl_id, "--out", str(out)]) == 0
    lines = (out / "pages.jsonl").read_text().splitlines()
    counts = collections.Counter(json.loads(line)["url"] for line in lines)
    assert {u: n for u, n in counts.items() if n != 1} == {}, f"{context} exported twice"
    assert set(counts) == expected, context


def test_victim_killed_repeatedly_every_page_exactly_once(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    chaos_crawl(redis_server, crawl_id, tmp_path)


def chaos_crawl(redis_server: Server, crawl_id: str, tmp_path: Path, extra: Sequence[str] = (),
                shards: int = 1) -> None:
    """The chaos test's body, on the Redis of *redis_server* (a single server or a cluster:
    tests/cluster runs it there); *extra* arguments for the workers (a sharded crawl's
    ``STATECRAWL_SHARDS``: *shards*, whose reclaims are counted in every shard)."""
    seed = int(os.environ.get("STATECRAWL_CHAOS_SEED") or random.randrange(2**32))
    print(f"chaos seed {seed} (replay: STATECRAWL_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=2000, delay=0.005) as site:
        args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0",
                *extra]

        def start(name: str) -> Worker:
            return Worker(args, worker_env(redis_server.url, tmp_path / name), tmp_path / f"{name}.log")

        def running() -> bool:
            return client.hget(k + "meta", "state") != b"finished"

        survivor, victim = start("survivor"), start("victim0")
        workers = [survivor, victim]
        held_at_kill: list[int] = []
        try:
            for kill in range(KILLS):
                # the victim is at work (holds leases); then a random moment more
                wait_until(lambda v=victim: held_by(client, crawl_id, v.pid) or v.proc.poll() is not None
                           or not running(), 30, f"victim {kill} leases (seed {seed})")
                assert victim.proc.poll() is None, (f"seed {seed}", victim.log())
                assert running(), f"seed {seed}: the crawl finished after only {kill} kills"
                time.sleep(rng.uniform(0.05, 0.8))
                assert victim.proc.poll() is None, (f"seed {seed}", victim.log())
                assert running(), f"seed {seed}: the crawl finished after only {kill} kills"
                held_at_kill.append(len(held_by(client, crawl_id, victim.pid)))
                if kill % 2:
                    for pid in watchdogs_of(victim.pid):
                        os.kill(pid, signal.SIGKILL)
                victim.proc.kill()
                victim.proc.wait(10)
                victim = start(f"victim{kill + 1}")
                workers.append(victim)
            for w in (survivor, victim):
                w.proc.wait(90)
        finally:
            for w in workers:
                w.stop()
        print(f"leases held by the victim at each kill: {held_at_kill}")
        logs = "\n".join(w.log() for w in (survivor, victim))
        assert [survivor.proc.returncode, victim.proc.returncode] == [0, 0], f"seed {seed}\n{logs}"
        assert "Spider closed (finished)" in survivor.text(), logs
        reclaimed = sum(int(client.hget(CrawlKeys(crawl_id, n, shards).stats, "reclaimed") or 0)
                        for n in range(shards))
        assert reclaimed > 0, (seed, held_at_kill)
        check_every_page_once(redis_server, crawl_id, site, tmp_path / "export",
                                       context=f"seed {seed}:")
