"""Redis bytes per queued request: statecrawl's frontier against scrapy-redis'.

    .venv/bin/python bench/frontier_memory.py [--requests 1000000] [--compare 100000]

Starts a private ``redis-server`` (no persistence) on a free port. The
requests are those the ``site`` spider makes when it follows links: its own
``_follow`` (callback, errback, meta), then what Scrapy's middlewares add on
the way to the scheduler (``depth`` from DepthMiddleware, the ``Referer``
header from RefererMiddleware: the page the link was found on). One site,
``https://www.example-news.com``, with article URLs shaped like the
scrapinghub benchmark's (``/<section>/<yyyy>/<mm>/<dd>/<slug>-<id>``, slugs
of 4-9 words from the benchmark's own article text), 100 links per page.

Figures (``MEMORY USAGE <key> SAMPLES 0`` of every frontier key, divided by
the requests queued; ``used_memory`` growth beside it):

* ``statecrawl``      --requests requests enqueued through ``CrawlStore.commit``
  as a worker does (packed: compact JSON, zstd with the crawl's dictionary,
  in the ``fifo`` lists; dupefilter off, so only the frontier is counted)
* ``statecrawl v1``   the first --compare of them as the previous version kept
  them: full JSON in ``reqs`` + an id in the ``queue`` ZSET
* ``scrapy-redis``    the first --compare of them in scrapy-redis' own
  ``PriorityQueue`` (pickled ``request_to_dict``, one ZSET member each)
* ``statecrawl polite`` the first --compare of them spread over 100 hosts in a
  polite crawl, once leases have sorted each into its host's queue
  (``hostq`` member + ``reqs`` entry: the cost of the per-host order)

and what a lease costs (``lease.lua`` of 32 requests, median of 200 calls, from
the lists and from the v1 layout); last,
the bytes a polite crawl keeps per host (``hosts`` and ``ready``: the host's
next allowed time and requests in flight), over --hosts hosts fetched once each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis
from scrapy import Request
from scrapy.utils.test import get_crawler

from _common import start_redis
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.packing import RequestCodec
from statecrawl.frontier.serialize import request_to_json
from statecrawl.frontier.store import CrawlStore, PendingRequest
from statecrawl.spiders.site import SiteSpider

ROOT = Path(__file__).resolve().parent.parent
TRUTH = ROOT.parent / "shared" / "benchdata" / "article-extraction-benchmark" / "ground-truth.json"
SITE = "https://www.example-news.com"
SECTIONS = ["world", "politics", "business", "technology", "science", "health", "sports",
            "opinion", "culture", "travel", "us", "economy"]
LINKS_PER_PAGE = 100


def vocabulary() -> list[str]:
    try:
        text = " ".join(v.get("articleBody", "") for v in json.loads(TRUTH.read_text()).values())
    except OSError:
        text = ""
    # every word as often as the articles use it: slugs are titles, written in the same words
    words = [w.lower() for w in re.findall(r"[A-Za-z]{3,12}", text)]
    return words or ["news", "report", "world", "market", "election", "study", "city"]


def article_url(rng: random.Random, words: list[str], n: int) -> str:
    slug = "-".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
    return (f"{SITE}/{rng.choice(SECTIONS)}/{rng.randint(2015, 2024)}/{rng.randint(1, 12):02d}/"
            f"{rng.randint(1, 28):02d}/{slug}-{n}")


def site_requests(spider: SiteSpider, count: int, seed: int = 7) -> list[Request]:
    """*count* requests as the site spider's links reach the scheduler."""
    rng, words = random.Random(seed), vocabulary()
    out: list[Request] = []
    page = f"{SITE}/"
    for n in range(count):
        if n % LINKS_PER_PAGE == 0 and out:
            page = out[rng.randrange(len(out))].url  # the next page the links were found on
        request = spider._follow(article_url(rng, words, n))
        request.meta["depth"] = 1 + n // 50_000
        request.headers["Referer"] = page
        out.append(request)
    return out


async def key_bytes(client: Redis, keys: list[str]) -> int:
    total = 0
    for key in keys:
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


async def used(client: Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def statecrawl_figure(client: Redis, spider: SiteSpider, total: int,
                            batch: int = 2000) -> dict[str, float]:
    store = CrawlStore(client, "frontier-bench")
    await store.open_crawl(spider="site", start_url=SITE, limit=None, args={})
    codec = RequestCodec()
    await codec.load(client, store.keys)  # as a worker does when it joins
    before, t0, chunk = await used(client), time.perf_counter(), 50_000
    pack_s = 0.0
    for start in range(0, total, chunk):
        requests = site_requests(spider, min(chunk, total - start), seed=start)
        for i in range(0, len(requests), batch):
            t = time.perf_counter()
            bodies = [codec.pack(request_to_json(r, spider, compact=True), r.url)
                      for r in requests[i:i + batch]]
            pack_s += time.perf_counter() - t
            if codec.ready():  # as WorkerState does before a commit
                await codec.sync(client, store.keys)
            await store.commit("bench", dedupe="none", requests=[
                PendingRequest(b"", False, 0, body) for body in bodies])
        print(f"  statecrawl: {start + len(requests):,} queued", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    k = CrawlKeys("frontier-bench")
    lists = [k.fifo_list(s.decode()) for s in await client.zrange(k.fifo, 0, -1)]
    size = await key_bytes(client, [k.fifo, k.queue, k.reqs, *lists])
    queued = (await store.status())["queued"]
    lease = await lease_ms(store)
    return {"queued": queued, "bytes": size / queued, "used": (await used(client) - before) / queued,
            "pack_us": pack_s / total * 1e6, "commit_per_s": total / elapsed,
            "lease32_ms": lease,
            "dictionary": len(codec.dictionary or b"")}


async def lease_ms(store: CrawlStore, calls: int = 200) -> float:
    """Median ms of a lease of 32 requests."""
    took = []
    for i in range(calls):
        t = time.perf_counter()
        _, got = await store.lease("bench-lease", 32, check_finished=False, token=f"t{i}")
        took.append((time.perf_counter() - t) * 1000)
        assert len(got) == 32
    return statistics.median(took)


async def v1_figure(client: Redis, spider: SiteSpider, count: int) -> dict[str, float]:
    """The previous layout: JSON in a hash, ids in a ZSET (as commit.lua used to write them),
    in a crawl of its own, whose leases then take that path of lease.lua."""
    store = CrawlStore(client, "v1-bench")
    await store.open_crawl(spider="site", start_url=SITE, limit=None, args={})
    queue, reqs = store.keys.queue, store.keys.reqs
    before = await used(client)
    requests = site_requests(spider, count)
    for i in range(0, count, 2000):
        async with client.pipeline(transaction=False) as pipe:
            for n, r in enumerate(requests[i:i + 2000], start=i):
                rid = f"{n + 1:012x}"
                pipe.hset(reqs, rid, request_to_json(r, spider))
                pipe.zadd(queue, {rid: 0})
            await pipe.execute()
    return {"bytes": await key_bytes(client, [queue, reqs]) / count,
            "used": (await used(client) - before) / count, "lease32_ms": await lease_ms(store)}


async def polite_figure(client: Redis, spider: SiteSpider, count: int, hosts: int = 100) -> float:
    """Bytes per queued request of a polite crawl once leases have sorted every request into
    its host's queue (``hostq`` member + ``reqs`` entry each), *hosts* hosts."""
    store = CrawlStore(client, "polite-bench")
    await store.open_crawl(spider="site", start_url=SITE, limit=None, args={})
    await client.hset(store.keys.meta, "polite", "1")
    await client.hset(store.keys.hosts, mapping={"*|d": 10 ** 9, "*|h": 0})  # nobody is due
    codec = RequestCodec()
    await codec.load(client, store.keys)
    requests = site_requests(spider, count)
    for i in range(0, count, 2000):
        bodies = []
        for r in requests[i:i + 2000]:
            url = r.url.replace("www.", f"h{len(bodies) % hosts}.", 1)
            bodies.append(codec.pack(request_to_json(r.replace(url=url), spider, compact=True), url))
        if codec.ready():
            await codec.sync(client, store.keys)
        await store.commit("bench", dedupe="none", requests=[
            PendingRequest(b"", False, 0, body) for body in bodies])
    for j in range(count // 200 + 10):  # each lease sorts 200 of the intake; none is due
        await store.lease("bench", 1, check_finished=False, token=f"p{j}")
    k = store.keys
    assert await client.zcard(k.hostq) + await client.hlen(k.leases) == count  # a few leased
    return await key_bytes(client, [k.hostq, k.reqs, k.ready, k.hosts, k.fifo]) / count


async def hosts_figure(client: Redis, spider: SiteSpider, count: int) -> float:
    """Bytes of a polite crawl's per-host state (``hosts``, ``ready``) per host, once every
    host has had one request fetched and acknowledged."""
    store = CrawlStore(client, "hosts-bench")
    await store.open_crawl(spider="site", start_url=SITE, limit=None, args={})
    await client.hset(store.keys.meta, "polite", "1")
    await client.hset(store.keys.hosts, mapping={"*|d": 250, "*|h": 10 ** 9})
    codec = RequestCodec()
    for i in range(0, count, 1000):
        urls = [f"https://site-{n}.example.com/" for n in range(i, min(count, i + 1000))]
        await store.commit("bench", dedupe="none", requests=[PendingRequest(
            b"", False, 0, codec.pack(request_to_json(Request(u), spider, compact=True), u))
            for u in urls])
        for j in range(100):  # a lease sorts at most 200 requests into their hosts' queues
            _, got = await store.lease("bench", 1000, check_finished=False, token=f"h{i}-{j}")
            if not got:
                break
            await store.commit("bench", dedupe="none", acks=[lid.split(" ")[0] for lid, _ in got])
    assert int(await client.hget(store.keys.stats, "acked") or 0) == count
    return await key_bytes(client, [store.keys.hosts, store.keys.ready]) / count


def scrapy_redis_figure(port: int, spider: SiteSpider, count: int) -> dict[str, float]:
    import redis
    from scrapy_redis.queue import PriorityQueue

    server = redis.Redis(port=port)
    queue = PriorityQueue(server, spider, "bench:scrapy-redis:requests")
    before = int(server.info("memory")["used_memory"])
    for request in site_requests(spider, count):
        queue.push(request)
    size = int(server.memory_usage("bench:scrapy-redis:requests", samples=0) or 0)
    return {"bytes": size / count,
            "used": (int(server.info("memory")["used_memory"]) - before) / count}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--compare", type=int, default=100_000,
                        help="requests stored in the other layouts")
    parser.add_argument("--hosts", type=int, default=100_000,
                        help="hosts of the politeness-state figure")
    args = parser.parse_args()
    crawler = get_crawler(SiteSpider)
    spider = SiteSpider(url=f"{SITE}/")
    spider._set_crawler(crawler)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        client = Redis(port=port)
        try:
            sc = await statecrawl_figure(client, spider, args.requests)
            await client.flushall()
            v1 = await v1_figure(client, spider, args.compare)
            await client.flushall()
            sr = await asyncio.to_thread(scrapy_redis_figure, port, spider, args.compare)
            await client.flushall()
            polite = await polite_figure(client, spider, args.compare)
            await client.flushall()
            per_host = await hosts_figure(client, spider, args.hosts)
            version = (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()
            proc.terminate()
            proc.wait(10)
    sample = site_requests(spider, 1)[0]
    print(f"\nredis {version}; one request as full JSON: {len(request_to_json(sample, spider))} B, "
          f"compact: {len(request_to_json(sample, spider, compact=True))} B\n")
    print(f"{'layout':<16}{'requests':>11}{'B/request':>11}{'used B/req':>12}")
    print(f"{'statecrawl':<16}{sc['queued']:>11,}{sc['bytes']:>11.1f}{sc['used']:>12.1f}")
    print(f"{'statecrawl v1':<16}{args.compare:>11,}{v1['bytes']:>11.1f}{v1['used']:>12.1f}")
    print(f"{'scrapy-redis':<16}{args.compare:>11,}{sr['bytes']:>11.1f}{sr['used']:>12.1f}")
    print(f"{'statecrawl polite':<16}{args.compare:>10,}{polite:>11.1f}{'':>12}"
          "   (100 hosts, every request sorted into its host's queue)")
    print(f"\nstatecrawl: dictionary {sc['dictionary']} B; packing {sc['pack_us']:.1f} us/request; "
          f"{sc['commit_per_s']:,.0f} requests/s built+committed; "
          f"lease of 32 requests p50 {sc['lease32_ms']:.2f} ms (from the v1 layout: "
          f"{v1['lease32_ms']:.2f} ms)")
    print(f"a polite crawl's per-host state: {per_host:.1f} B per host ({args.hosts:,} hosts, "
          "each fetched once)")


if __name__ == "__main__":
    asyncio.run(main())
