"""Redis bytes retained per finished page, items kept in Redis (compressed) vs in a sink.

    .venv/bin/python bench/redis_memory.py [--pages 100000] [--skip-real] [--skip-synthetic]

Starts a private ``redis-server`` (no persistence) on a free port; never the one on 6379.

(a) **real pages**: the 181 article pages of the scrapinghub benchmark
    (``../shared/benchdata/article-extraction-benchmark``) served on 127.0.0.1
    with an index page linking them, crawled by a real ``scrapy crawl site``
    worker, once with the default ``redis`` sink and once with a directory sink.
(b) **synthetic pages**: ``--pages`` requests committed, leased and
    acknowledged through the same scripts a worker uses (``CrawlStore.commit``,
    batches of 500, Scrapy's request fingerprints), each acknowledged with one
    item: for the ``redis`` sink the real items of (a) in turn under the
    synthetic URLs (so compression sees real pages), for the sink only its
    key. No HTTP: a real crawl of 100k pages takes too long for a benchmark.

For each: ``MEMORY USAGE`` (``SAMPLES 0``) of every key of the crawl, summed,
per finished page (``stats.items``), and the growth of INFO ``used_memory``
over the crawl per page; and the mean item JSON size (a) for the 25% target.
Prints figures; never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import redis
import zstandard
from redis.asyncio import Redis as AsyncRedis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import start_redis  # noqa: E402

from statecrawl.frontier.item_codec import LEVEL, load_item, pack_item  # noqa: E402
from statecrawl.frontier.serialize import dumps  # noqa: E402
from statecrawl.frontier.store import CrawlStore, PendingItem, PendingRequest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "benchdata" / "article-extraction-benchmark" / "html"


def serve_articles() -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    pages = {f"/a/{p.name.split('.')[0]}.html": gzip.open(p).read() for p in sorted(DATA.glob("*.html.gz"))}
    index = ("<html><head><title>Articles</title></head><body><ul>" + "".join(
        f'<li><a href="{path}">{path}</a></li>' for path in pages) + "</ul></body></html>").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = index if self.path == "/" else pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, list(pages)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def crawl_bytes(client: redis.Redis, crawl_id: str) -> tuple[int, dict[str, int]]:
    sizes = {k.decode(): int(client.memory_usage(k, samples=0) or 0)
             for k in client.scan_iter(f"sc:{{{crawl_id}}}:*", count=1000)}
    return sum(sizes.values()), sizes


def report(label: str, client: redis.Redis, crawl_id: str, before: int) -> None:
    pages = int(client.hget(f"sc:{{{crawl_id}}}:stats", "items") or 0)
    total, sizes = crawl_bytes(client, crawl_id)
    used = used_memory(client) - before
    big = ", ".join(f"{k.split(':', 2)[2]} {v:,}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:4])
    print(f"{label:<34} {pages:>7} pages  {total / max(pages, 1):>9.1f} B/page (MEMORY USAGE)  "
          f"{used / max(pages, 1):>9.1f} B/page (used_memory delta)   [{big}]", flush=True)


def real_crawl(port: int, tmp: Path, level: int | None) -> None:
    server, paths = serve_articles()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    client = redis.Redis(port=port)
    for label, sink in (("(a) 181 real pages, redis sink", None),
                        ("(a) 181 real pages, directory sink", tmp / "sink")):
        crawl_id = f"mem-{'dir' if sink else 'redis'}-{int(time.time())}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
        env.update(REDIS_URL=f"redis://127.0.0.1:{port}/0", PYTHONPATH=str(ROOT),
                   STATECRAWL_OUTPUT_DIR=str(tmp / crawl_id))
        args = [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={url}", "-a",
                f"crawl_id={crawl_id}", "-a", "max_depth=1", "-s", "LOG_LEVEL=WARNING"]
        if sink is not None:
            args += ["-s", f"STATECRAWL_SINK={sink}"]
        if level is not None:
            args += ["-s", f"STATECRAWL_ITEMS_ZSTD_LEVEL={level}"]
        before = used_memory(client)
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(done.stderr[-3000:])
            raise SystemExit(f"the crawl failed ({done.returncode})")
        report(label, client, crawl_id, before)
        if sink is None:
            raws = client.hvals(f"sc:{{{crawl_id}}}:items")
            plain = [len(dumps(load_item(r), "item")) for r in raws]
            print(f"    item JSON {sum(plain) / len(plain):,.0f} B/page, stored "
                  f"{sum(map(len, raws)) / len(raws):,.0f} B/page "
                  f"({sum(plain) / sum(map(len, raws)):.2f}x)", flush=True)
            real_items.extend(load_item(r) for r in raws)
            bodies = [dumps(item, "item") for item in real_items]
            for lvl in sorted({9, 12, 15, 19, level or LEVEL}):
                t0 = time.perf_counter()
                sizes = [len(pack_item(b, lvl)) for b in bodies]
                ms = (time.perf_counter() - t0) * 1000 / len(bodies)
                print(f"    zstd level {lvl:>2} + dictionary: {sum(sizes) / len(sizes):,.0f} B/item, "
                      f"{ms:.2f} ms/item to compress (one thread)", flush=True)
            for name, pack in (("zlib level 9", lambda b: zlib.compress(b, 9)),
                               ("zstd level 15, no dictionary",
                                zstandard.ZstdCompressor(level=15).compress)):
                t0 = time.perf_counter()
                sizes = [len(pack(b)) for b in bodies]
                ms = (time.perf_counter() - t0) * 1000 / len(bodies)
                print(f"    {name}: {sum(sizes) / len(sizes):,.0f} B/item, {ms:.2f} ms/item",
                      flush=True)
    server.shutdown()


real_items: list[dict[str, Any]] = []


async def synthetic(port: int, pages: int, in_sink: bool, level: int | None) -> None:
    from scrapy import Request
    from scrapy.utils.test import get_crawler

    fingerprint = get_crawler().request_fingerprinter.fingerprint
    client = AsyncRedis(port=port)
    crawl_id = f"syn-{'dir' if in_sink else 'redis'}-{int(time.time())}"
    store = CrawlStore(client, crawl_id)
    await store.open_crawl(spider="site", start_url="https://site.example/")
    sync = redis.Redis(port=port)
    before = used_memory(sync)
    await store.heartbeat("w", 30)
    samples = real_items or [{"url": "", "markdown": "# Page\n\n" + "text " * 800}]
    batch, n = 500, 0
    while n < pages:
        size = min(batch, pages - n)
        urls = [f"https://site-{i % 100}.example/page/{i}.html" for i in range(n, n + size)]
        reqs = [PendingRequest(fingerprint(Request(u)), True, 0, dumps({"url": u}, "request"))
                for u in urls]
        result = await store.commit("w", dedupe="exact", requests=reqs, want=size)
        items = []
        for (lease, _), u, i in zip(result.leased, urls, range(n, n + size)):
            if in_sink:
                items.append(PendingItem(u, False, b"", in_sink=True))
            else:
                data = dict(samples[i % len(samples)], url=u)
                items.append(PendingItem(u, False, pack_item(dumps(data, "item"),
                                                             level or LEVEL)))
        await store.commit("w", dedupe="exact", items=items, acks=[lease for lease, _ in result.leased])
        n += size
    await store.lease("w", 1, check_finished=True)  # marks it finished, as the last lease does
    await store.leave("w")
    report(f"(b) {pages} synthetic, {'directory' if in_sink else 'redis'} sink", sync, crawl_id, before)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=100_000, help="synthetic pages (b)")
    parser.add_argument("--level", type=int, default=None,
                        help="STATECRAWL_ITEMS_ZSTD_LEVEL for the redis sink (default: the default)")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(Path(tmp))
        try:
            if not args.skip_real:
                real_crawl(port, Path(tmp), args.level)
            if not args.skip_synthetic:
                for in_sink in (True, False):
                    asyncio.run(synthetic(port, args.pages, in_sink, args.level))
        finally:
            proc.terminate()
            proc.wait(10)
    print("targets: <= 64 B/page with a sink; <= 4,950 B/page (25% of 19.8 KB) with items "
          "in Redis")


if __name__ == "__main__":
    main()
