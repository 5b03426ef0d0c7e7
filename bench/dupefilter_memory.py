"""Bytes per URL, false positives and insert speed of each dupefilter layout.

    .venv/bin/python bench/dupefilter_memory.py [--urls 1000000] [--batch 1000] [--random-digests]

Starts a private ``redis-server`` (no persistence) on a free port and, for N
distinct URLs, measures:

* ``scrapy-redis``  its layout: a SET of 40-character hex fingerprints (SADD
  in pipelined batches here; scrapy-redis itself makes one round trip per
  request, so its real insert rate is far lower)
* ``set``           statecrawl's previous layout: a SET of 20-byte binary
  fingerprints, through the commit script
* ``exact``         the compact exact layout (``digests`` hash), through the
  commit script
* ``bloom``         the Bloom filter sized for capacity = N at 1e-4, through
  the commit script

The fingerprints are Scrapy's (``RequestFingerprinter``) over synthetic URLs
``https://site-<i % 1000>.example/page/<i>.html``, unless ``--random-digests``
(random 20-byte digests: the same statistics, generated much faster). Every
statecrawl layout is fed through ``CrawlStore.commit`` with the dupefilter
mode under test, ``--batch`` requests per commit; the frontier keys (``fifo``
and its list) are emptied after each commit, untimed, so the figures are those of
the dupefilter key alone:

* ``B/URL``      ``MEMORY USAGE <key> SAMPLES 0`` / N (the whole key)
* ``B/URL used`` the growth of INFO ``used_memory`` over the run / N
* ``insert/s``   URLs committed per second (all new)
* ``repeat/s``   URLs per second when committing all N again (all duplicates)
* ``false +``    the share of N fresh URLs (never inserted) the filter calls
  seen, checked without inserting (``dedupe_check.lua``)

For bloom, the URLs it skipped while inserting (distinct URLs reported as
duplicates: false positives) are printed next to the crawl's
``bloom_estimated_false_skips``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from statecrawl.frontier.dupefilter import check_fingerprints, open_crawl_dupefilter
from statecrawl.frontier.store import CrawlStore, PendingRequest

ERROR_RATE = 1e-4


@dataclass
class Result:
    layout: str
    key_bytes: int
    used_bytes: int
    insert_rate: float
    repeat_rate: float
    false_positive: float | None
    note: str = ""


def fingerprints(n: int, offset: int, random_digests: bool) -> list[bytes]:
    if random_digests:
        return [os.urandom(20) for _ in range(n)]
    from scrapy import Request
    from scrapy.utils.request import RequestFingerprinter

    fp = RequestFingerprinter().fingerprint
    return [fp(Request(f"https://site-{i % 1000}.example/page/{i}.html"))
            for i in range(offset, offset + n)]


async def used_memory(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def bench_scrapy_redis(client: Redis, fps: list[bytes], fresh: list[bytes],
                             batch: int) -> Result:
    key = "bench:scrapy-redis:dupefilter"
    hexes = [fp.hex() for fp in fps]
    before = await used_memory(client)

    async def sadd_all() -> tuple[float, int]:
        added, t0 = 0, time.perf_counter()
        for i in range(0, len(hexes), batch):
            async with client.pipeline(transaction=False) as pipe:
                pipe.sadd(key, *hexes[i:i + batch])
                added += (await pipe.execute())[0]
        return time.perf_counter() - t0, added

    took, added = await sadd_all()
    assert added == len(fps)
    key_bytes = int(await client.memory_usage(key, samples=0))
    used = await used_memory(client) - before
    again, added = await sadd_all()
    assert added == 0
    hits = 0
    for i in range(0, len(fresh), batch):
        hits += sum(await client.smismember(key, [fp.hex() for fp in fresh[i:i + batch]]))
    await client.delete(key)
    return Result("scrapy-redis", key_bytes, used, len(fps) / took, len(fps) / again,
                  hits / len(fresh))


async def bench_mode(client: Redis, mode: str, fps: list[bytes], fresh: list[bytes],
                     batch: int) -> Result:
    store = CrawlStore(client, f"bench-{mode}")
    await store.delete()
    await store.open_crawl(spider="bench")
    before = await used_memory(client)
    await open_crawl_dupefilter(store, mode, capacity=len(fps), error_rate=ERROR_RATE)
    k = store.keys
    key = {"set": k.seen, "exact": k.digests, "bloom": k.bloom}[mode]

    async def commit_all() -> tuple[float, int, int]:
        took, enqueued, duplicates = 0.0, 0, 0
        for i in range(0, len(fps), batch):
            requests = [PendingRequest(fp, True, 0, b"{}") for fp in fps[i:i + batch]]
            t0 = time.perf_counter()
            result = await store.commit("bench", dedupe=mode, requests=requests)
            took += time.perf_counter() - t0
            enqueued += result.enqueued
            duplicates += result.duplicates
            await client.delete(k.queue, k.reqs, k.fifo, k.fifo_list(0))
        return took, enqueued, duplicates

    took, _, skipped = await commit_all()
    key_bytes = int(await client.memory_usage(key, samples=0))
    used = await used_memory(client) - before
    again, enqueued_again, _ = await commit_all()
    assert enqueued_again == 0, enqueued_again
    new = 0
    for i in range(0, len(fresh), batch):
        new += await check_fingerprints(store, mode, fresh[i:i + batch], add=False)
    note = ""
    if mode == "bloom":
        estimate = int(await client.hget(k.stats, "bloom_estimated_false_skips") or 0)
        note = (f"skipped {skipped} of the {len(fps):,} distinct URLs while inserting "
                f"(crawl's bloom_estimated_false_skips: {estimate})")
    else:
        assert skipped == 0, (mode, skipped)
    await store.delete()
    return Result(mode, key_bytes, used, len(fps) / took, len(fps) / again,
                  1 - new / len(fresh), note)


async def run(args: argparse.Namespace, port: int) -> list[Result]:
    n = args.urls
    t0 = time.perf_counter()
    fps = fingerprints(n, 0, args.random_digests)
    fresh = fingerprints(n, n, args.random_digests)
    source = "random 20-byte digests" if args.random_digests else "Scrapy's RequestFingerprinter"
    print(f"{2 * n:,} fingerprints ({source}) in {time.perf_counter() - t0:.1f}s", flush=True)
    assert len(set(fps) | set(fresh)) == 2 * n, "fingerprints are not distinct"
    client = Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            await client.ping()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    version = (await client.info("server"))["redis_version"]
    print(f"redis {version}, {n:,} URLs, {args.batch} per batch\n", flush=True)
    results = [await bench_scrapy_redis(client, fps, fresh, args.batch)]
    for mode in ("set", "exact", "bloom"):
        results.append(await bench_mode(client, mode, fps, fresh, args.batch))
        print(f"  {mode} done", flush=True)
    await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--random-digests", action="store_true",
                        help="random 20-byte digests instead of Scrapy's fingerprints of URLs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            results = asyncio.run(run(args, port))
        finally:
            proc.terminate()
            proc.wait(10)
    n = args.urls
    print(f"\n{'layout':<14}{'B/URL':>8}{'B/URL used':>12}{'insert/s':>11}{'repeat/s':>11}"
          f"{'false +':>10}")
    for r in results:
        fp = "-" if r.false_positive is None else f"{r.false_positive:.2e}"
        print(f"{r.layout:<14}{r.key_bytes / n:>8.2f}{r.used_bytes / n:>12.2f}"
              f"{r.insert_rate:>11,.0f}{r.repeat_rate:>11,.0f}{fp:>10}")
    for r in results:
        if r.note:
            print(f"{r.layout}: {r.note}")


if __name__ == "__main__":
    main()
