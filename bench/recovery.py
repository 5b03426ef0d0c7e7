"""How long a SIGKILLed worker's requests wait before another worker fetches them.

    .venv/bin/python bench/recovery.py [--kills 10] [--pages 20000] [--delay 0.005] [--seed N]

Two ``scrapy crawl site`` workers share one crawl of the demo site (served in
this process with ``record=True``, so every GET is logged with its arrival
time) on a private ``redis-server``. Then, ``--kills`` times: once the victim
has joined, wait a random 0.5-1.5 s, read the leases the victim holds (its
worker id carries its pid) and their URLs (reqs hash), SIGKILL it at t0, and
measure t0 -> the first GET of any of those URLs by another worker; restart the victim as a new
process on the same crawl once the re-fetch is seen (``--restart-first``: at
once, so that its start-up, about 1.5 s of CPU for Scrapy's imports, competes
with the survivor as it would under a supervisor). That time is the failure
detection, the reclaim, the next lease by a live worker and its request
reaching the site; the time
to the reclaim itself (``reclaimed`` in the stats hash, polled every 5 ms) is
printed too.

A killed worker is found two ways: its watchdog process sees its pipe close
and gives its leases back at once (the default), or, with ``--no-watchdog``,
the survivor's heartbeat finds it silent for ``STATECRAWL_WORKER_TIMEOUT``.
Each worker process sends its own User-Agent, so a GET the victim sent just
before it died (still in the socket buffers) is never taken for a re-fetch.
A kill whose victim held no lease is skipped and counted. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.packing import RequestCodec

ROOT = Path(__file__).resolve().parent.parent
REFETCH_TIMEOUT = 15.0


class Crawl:
    def __init__(self, site: DemoSite, redis_url: str, client: redis.Redis, tmp: Path,
                 settings: list[str]) -> None:
        self.site, self.client, self.tmp, self.settings = site, client, tmp, settings
        self.crawl_id = "bench-recovery-" + uuid.uuid4().hex[:8]
        self.k = f"sc:{{{self.crawl_id}}}:"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
        self.env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
        self.started = 0

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.started += 1
        env = dict(self.env, STATECRAWL_OUTPUT_DIR=str(self.tmp / f"out{self.started}"))
        with open(self.tmp / f"worker{self.started}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={self.site.url}/",
                 "-a", f"crawl_id={self.crawl_id}", "-s", "RETRY_TIMES=0", "-s", "LOG_LEVEL=WARNING",
                 "-s", f"USER_AGENT={self.agent(self.started)}", *self.settings],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def agent(n: int) -> str:
        return f"recovery-bench-worker-{n}"

    def running(self) -> bool:
        return self.client.hget(self.k + "meta", "state") != b"finished"

    def reclaimed(self) -> int:
        return int(self.client.hget(self.k + "stats", "reclaimed") or 0)

    def joined(self, pid: int) -> bool:
        return any(_pid(w.decode()) == pid for w in self.client.zrange(self.k + "workers", 0, -1))

    def held_paths(self, pid: int) -> set[str]:
        """Paths of the requests leased by the worker process *pid*."""
        leases = self.client.hgetall(self.k + "leases")
        ids = [lid for lid, value in leases.items() if _pid(value.decode().rsplit(" ", 1)[0]) == pid]
        if not ids:
            return set()
        bodies = self.client.hmget(self.k + "reqs", ids)
        codec = RequestCodec(self.client.get(self.k + "zdict"))  # stored packed
        return {json.loads(codec.unpack(b))["url"][len(self.site.url):]
                for b in bodies if b is not None}


def _pid(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[1])  # "<hostname>-<pid>-<hex>"


def first_refetch(crawl: Crawl, paths: set[str], t0: float, reclaimed_before: int, victim: str,
                  ) -> tuple[float | None, float | None]:
    """Seconds from t0 to the reclaim (stats hash, polled) and to the first GET of one of
    *paths* by a worker other than the one whose User-Agent is *victim*."""
    deadline = t0 + REFETCH_TIMEOUT
    reclaimed_at = None
    while time.monotonic() < deadline:
        if reclaimed_at is None and crawl.reclaimed() > reclaimed_before:
            reclaimed_at = time.monotonic() - t0
        for when, path, agent in crawl.site.requests_since(t0):
            if agent != victim and path.split("?", 1)[0] in paths:
                return reclaimed_at, when - t0
        time.sleep(0.005)
    return reclaimed_at, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--pages", type=int, default=20000)
    parser.add_argument("--delay", type=float, default=0.005, help="seconds per request at the site")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--restart-first", action="store_true",
                        help="restart the victim right after the kill, not after the measurement")
    parser.add_argument("--no-watchdog", action="store_true",
                        help="find dead workers by heartbeat timeout only (STATECRAWL_WATCHDOG=False)")
    args = parser.parse_args()
    settings = ["-s", "STATECRAWL_WATCHDOG=False"] if args.no_watchdog else []
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    how = "heartbeat timeout only" if args.no_watchdog else "watchdog"
    print(f"{args.kills} kills, {args.pages} pages, site delay {args.delay * 1000:.0f} ms, "
          f"seed {seed}, dead workers found by {how}")

    with tempfile.TemporaryDirectory(prefix="statecrawl-recovery-") as tmpdir:
        tmp = Path(tmpdir)
        redis_proc, redis_port = start_redis(tmp)
        client, redis_url = redis.Redis(port=redis_port), f"redis://127.0.0.1:{redis_port}/0"
        site = DemoSite(pages=args.pages, delay=args.delay, record=True).start()
        crawl = Crawl(site, redis_url, client, tmp, settings)
        survivor, victim = crawl.start_worker(), crawl.start_worker()
        measured: list[float] = []
        reclaims: list[float] = []
        skipped = lost = 0
        try:
            for kill in range(1, args.kills + 1):
                deadline = time.monotonic() + 30
                while not crawl.joined(victim.pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.5, 1.5))
                if not crawl.running() or survivor.poll() is not None:
                    print(f"the crawl ended after {kill - 1} kills; use more --pages")
                    break
                paths = crawl.held_paths(victim.pid)
                victim_agent = crawl.agent(crawl.started)  # the victim is the latest start
                reclaimed_before = crawl.reclaimed()
                t0 = time.monotonic()
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                if args.restart_first:
                    victim = crawl.start_worker()
                reclaimed_at, took = (None, None)
                if paths:
                    reclaimed_at, took = first_refetch(crawl, paths, t0, reclaimed_before,
                                                       victim_agent)
                if not args.restart_first:
                    victim = crawl.start_worker()
                if not paths:
                    skipped += 1
                    print(f"kill {kill:2d}: the victim held no lease, skipped")
                    continue
                if took is None:
                    lost += 1
                    print(f"kill {kill:2d}: {len(paths)} leased, none fetched again within {REFETCH_TIMEOUT:.0f} s")
                    continue
                measured.append(took)
                if reclaimed_at is not None:
                    reclaims.append(reclaimed_at)
                    seen = f"(reclaimed after {reclaimed_at * 1000:4.0f} ms)"
                else:
                    seen = "(reclaim not seen first)"
                print(f"kill {kill:2d}: {len(paths):3d} leased, first re-fetch after {took * 1000:5.0f} ms {seen}")
        finally:
            for proc in (survivor, victim):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (survivor, victim):
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            site.stop()
            client.close()
            redis_proc.terminate()
            redis_proc.wait(10)

    if measured:
        ms = [t * 1000 for t in measured]
        print(f"kill -> first re-fetch: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms "
              f"over {len(ms)} kills")
    if reclaims:
        ms = [t * 1000 for t in reclaims]
        print(f"kill -> reclaim (stats hash): median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms")
    print(f"kills with no leased request (skipped): {skipped}; never re-fetched: {lost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
