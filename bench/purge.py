"""How long ``statecrawl purge`` takes on a big crawl, and whether Redis stays responsive meanwhile.

    .venv/bin/python bench/purge.py [--requests 1000000] [--jars 50000] [--others 200]

Starts a private ``redis-server`` (no persistence) on a free port and fills it
with one big crawl -- ``--requests`` requests in its frontier (``queue`` ZSET
+ ``reqs`` HASH, ~250-byte JSON each), as many dupefilter fingerprints
(``digests``), a tenth as many items (~2 KB each), ``--jars`` session cookie
jars (one key each) -- beside ``--others`` small crawls and as many unrelated
keys. Then, while a thread PINGs Redis every 5 ms on its own connection:

* ``purge``   :func:`statecrawl.frontier.lifecycle.purge_crawl` of the big
  crawl: its time, keys and bytes, and the PING latencies during it;
* ``DEL``     for contrast, the same crawl built again and its four big keys
  deleted with one plain ``DEL`` (what a naive purge would do).

It checks that every other crawl's keys are still there after the purge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from statecrawl.frontier.keys import CrawlKeys  # noqa: E402
from statecrawl.frontier.lifecycle import purge_crawl  # noqa: E402
from statecrawl.frontier.store import CrawlStore  # noqa: E402

BIG = "big-crawl"


class Pinger(threading.Thread):
    """PINGs every *interval* s on its own connection and records each round trip (ms)."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(port=port)
        self.interval, self.times, self.running = interval, [], True

    def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            self.client.ping()
            self.times.append((time.perf_counter() - start) * 1000)
            time.sleep(self.interval)

    def stop(self) -> list[float]:
        self.running = False
        self.join(5)
        return self.times


async def build(port: int, requests: int, jars: int, others: int) -> None:
    client = Redis(port=port)
    store = CrawlStore(client, BIG)
    await store.open_crawl(spider="bench", start_url="https://example.com/")
    k = store.keys
    body = '{"v":1,"url":"https://example.com/%08d","method":"GET","headers":{},"meta":{"depth":3},' \
           '"priority":0,"callback":"parse","errback":null,"dont_filter":false,"pad":"%s"}'
    chunk = 10_000
    for start in range(0, requests, chunk):
        async with client.pipeline(transaction=False) as pipe:
            ids = range(start, min(start + chunk, requests))
            pipe.zadd(k.queue, {f"{i:012x}": 0 for i in ids})
            pipe.hset(k.reqs, mapping={f"{i:012x}": body % (i, "x" * 60) for i in ids})
            pipe.hset(k.digests, mapping={(i % 65536).to_bytes(2, "big") + i.to_bytes(4, "big"):
                                          i.to_bytes(8, "big") for i in ids})
            pipe.hset(k.items, mapping={f"https://example.com/{i}": "y" * 2000
                                        for i in ids if i % 10 == 0})
            await pipe.execute()
    for start in range(0, jars, chunk):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + chunk, jars)):
                pipe.hset(k.jar(f"pool-{n}"), "cookie", "v" * 40)
            await pipe.execute()
    async with client.pipeline(transaction=False) as pipe:
        for n in range(others):
            o = CrawlKeys(f"other-{n}")
            pipe.hset(o.meta, mapping={"state": "finished", "epoch": "e"})
            pipe.sadd("sc:crawls", o.crawl_id)
            pipe.hset(o.items, "u", "i" * 500)
            pipe.set(f"unrelated:{n}", "z")
        await pipe.execute()
    await client.aclose()


def latencies(times: list[float]) -> str:
    if not times:
        return "no PING answered"
    ordered = sorted(times)
    return (f"{len(times)} PINGs: median {statistics.median(ordered):.2f} ms, "
            f"p99 {ordered[int(len(ordered) * 0.99) - 1]:.2f} ms, max {ordered[-1]:.1f} ms")


def used_mb(client: redis.Redis) -> float:
    deadline = time.monotonic() + 60
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(client.info("memory")["used_memory"]) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--jars", type=int, default=50_000)
    parser.add_argument("--others", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        sync = redis.Redis(port=port)
        try:
            asyncio.run(build(port, args.requests, args.jars, args.others))
            total = sync.dbsize()
            before = used_mb(sync)
            print(f"Redis: {total} keys, {before:.0f} MiB used; crawl {BIG}: {args.requests} requests, "
                  f"{args.jars} jars; {args.others} other crawls")
            pinger = Pinger(port)
            pinger.start()
            time.sleep(0.2)
            idle = list(pinger.times)
            start = time.perf_counter()

            async def purge() -> object:
                client = Redis(port=port)
                try:
                    return await purge_crawl(client, BIG)
                finally:
                    await client.aclose()

            result = asyncio.run(purge())
            took = time.perf_counter() - start
            during = pinger.stop()[len(idle):]
            after = used_mb(sync)
            print(f"purge: {took:.2f} s, {result.keys} keys, {result.bytes / 2**20:.0f} MiB by "  # type: ignore[attr-defined]
                  f"MEMORY USAGE; used_memory {before:.0f} -> {after:.0f} MiB")
            print(f"  before it:  {latencies(idle)}")
            print(f"  during it:  {latencies(during)}")
            left = sync.dbsize()
            kept = sum(1 for n in range(args.others) if sync.exists(f"sc:{{other-{n}}}:items"))
            print(f"  left: {left} keys (expected {total - result.keys}: "  # type: ignore[attr-defined]
                  f"{'ok' if left == total - result.keys else 'MISMATCH'}), "  # type: ignore[attr-defined]
                  f"other crawls intact: {kept}/{args.others}")

            asyncio.run(build(port, args.requests, 0, 0))
            k = CrawlKeys(BIG)
            pinger = Pinger(port)
            pinger.start()
            time.sleep(0.2)
            idle = list(pinger.times)
            start = time.perf_counter()
            sync.delete(k.queue, k.reqs, k.digests, k.items)
            took = time.perf_counter() - start
            during = pinger.stop()[len(idle):]
            print(f"DEL of its 4 big keys (contrast): {took:.2f} s; during it: {latencies(during)}")
        finally:
            sync.close()
            proc.kill()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
