"""What the Firecrawl-compatible API costs over plain Scrapy, measured in one run.

    PYTHONPATH=. .venv/bin/python bench/api.py [--quick] [--json PATH] [--scrapes N] [--pages M]
        [--crawl-pages N] [--job-workers P] [--jobs-per-worker K] [--status-docs N] [--gets N]
        [--server auto|nginx|python] [--only FIGURE ...]

Everything runs on this machine: a private ``redis-server`` on a free port,
the demo site (nginx when installed, else its Python server; ``--server``),
one ``statecrawl serve --scrape-workers 0`` and two ``statecrawl worker
--serve-scrapes``, with ``STATECRAWL_NET_ALLOW=127.0.0.1``. Figures:

1. ``POST /v2/scrape`` (markdown) of one page, sequentially, ``--scrapes`` times:
   p50/p95 latency, beside a direct GET + ``to_markdown`` of the same page
   (interleaved); the overhead is the difference of the percentiles.
2. Scrape throughput: 32 concurrent clients scrape ``--pages`` distinct pages
   through the API (1 API process, 2 scrape workers): pages/s, against one
   plain ``scrapy runspider bench/list_spider.py`` (same URLs, ``to_markdown``,
   32 concurrent requests; timed from its start to its last page).
3. A crawl of ``--crawl-pages`` through ``POST /v2/crawl`` (job workers
   ``statecrawl worker --jobs K``), against ``statecrawl crawl URL --workers 2``.
   Rate = pages from the first page seen done to the end, over that time
   (both polled: the API's status route, the crawl's Redis counters), so
   process start-up is left out of both; wall figures are printed too.
   Prints "not available (501)" while the API has no crawl executor.
4. ``GET /v2/crawl/{id}`` of a completed job of ``--status-docs`` 3-5 KB
   Markdown documents (written with ``JobStore``), first page and last page.

Each figure comes from one run on a possibly shared machine: read the load
average printed with them. ``--quick`` shrinks every size; ``--only`` runs
some figures alone (``latency``, ``throughput``, ``status``, ``crawl``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from _common import free_port, start_redis  # noqa: E402  (bench/ is on sys.path as a script)
from _crawls import api_crawl, statecrawl_crawl
from _procs import ROOT, Procs, base_env, cpu_seconds, descendants, percentile, statecrawl_argv, wait_http, wait_log
from throughput import start_site
from statecrawl.api import JobStore, parse_request
from statecrawl.content.markdown import to_markdown

FIGURES = ("latency", "throughput", "status", "crawl")
SIZES = {"scrapes": (200, 30), "pages": (600, 120), "crawl_pages": (3000, 300),
         "status_docs": (10_000, 1000), "gets": (50, 10)}  # (default, --quick)
CONCURRENCY = 32
READY = 90.0  # s for a process to be up
WORDS = ("crawl frontier request response scheduler spider item pipeline middleware redis queue "
         "fingerprint duplicate robots sitemap link depth priority retry throttle latency worker "
         "shard lease checkpoint resume state export feed selector parser domain host budget").split()


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2)}


# -- 1 and 2: scrapes ---------------------------------------------------------------------


def scrape_overhead(api: str, page: str, n: int) -> dict[str, Any]:
    api_ms: list[float] = []
    direct_ms: list[float] = []
    same = True
    with httpx.Client(timeout=60) as client:
        for i in range(n + 10):  # the first 10 are warm-up
            t0 = time.perf_counter()
            r = client.post(f"{api}/v2/scrape", json={"url": page, "formats": ["markdown"]})
            t1 = time.perf_counter()
            direct = client.get(page)
            markdown = to_markdown(direct.text, str(direct.url))
            t2 = time.perf_counter()
            body = r.json()
            if r.status_code != 200 or not body.get("success"):
                raise RuntimeError(f"POST /v2/scrape answered {r.status_code}: {str(body)[:300]}")
            same = same and body["data"].get("markdown") == markdown
            if i >= 10:
                api_ms.append(1000 * (t1 - t0))
                direct_ms.append(1000 * (t2 - t1))
    through, plain = ms(api_ms), ms(direct_ms)
    return {"requests": n, "api": through, "direct": plain, "same_markdown": same,
            "overhead_p50_ms": round(through["p50_ms"] - plain["p50_ms"], 2),
            "overhead_p95_ms": round(through["p95_ms"] - plain["p95_ms"], 2)}


async def _scrape_all(api: str, urls: list[str]) -> tuple[float, list[float], int]:
    queue = iter(urls)
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def client_loop() -> None:
            nonlocal failures
            for url in queue:  # one iterator shared by every client
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{api}/v2/scrape", json={"url": url, "formats": ["markdown"]})
                    ok = r.status_code == 200 and r.json().get("success") is True
                except httpx.HTTPError:
                    ok = False
                latencies.append(1000 * (time.perf_counter() - t0))
                failures += not ok
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client_loop() for _ in range(CONCURRENCY))),
                               timeout=60 + len(urls))
        return time.perf_counter() - started, latencies, failures


def scrape_throughput(api: str, urls: list[str], cpu_pids: dict[str, list[int]],
                      site_pids: list[int]) -> dict[str, Any]:
    """Pages/s of *urls* scraped by CONCURRENCY clients; CPU ms/page of each group of *cpu_pids*,
    and, apart (they are not the API's cost), of the site's *site_pids* and of the clients."""
    cpu0 = {name: cpu_seconds(pids) for name, pids in cpu_pids.items()}
    site0, client0 = cpu_seconds(site_pids), time.process_time()
    seconds, latencies, failures = asyncio.run(_scrape_all(api, urls))
    cpu = {name: 1000 * (cpu_seconds(pids) - cpu0[name]) / len(urls) for name, pids in cpu_pids.items()}
    others = {"site": 1000 * (cpu_seconds(site_pids) - site0) / len(urls),
              "clients": 1000 * (time.process_time() - client0) / len(urls)}
    return {"pages": len(urls), "failures": failures, "seconds": round(seconds, 2),
            "pages_per_s": round(len(urls) / seconds, 1), "latency": ms(latencies),
            "cpu_ms_per_page": round(sum(cpu.values()), 2),
            "cpu_ms_per_page_by_process": {name: round(v, 2) for name, v in cpu.items()},
            "cpu_ms_per_page_outside": {name: round(v, 2) for name, v in others.items()}}


def scrapy_list(urls: list[str], tmp: Path) -> dict[str, Any]:
    (tmp / "urls.txt").write_text("\n".join(urls) + "\n")
    result = tmp / "list-result.jsonl"
    env = base_env(BENCH_URLS=str(tmp / "urls.txt"), BENCH_RESULT=str(result),
                   BENCH_CONCURRENCY=str(CONCURRENCY))
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(ROOT / "bench" / "list_spider.py")]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120 + len(urls))
    if proc.returncode or not result.exists():
        raise RuntimeError(f"plain scrapy failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    row = json.loads(result.read_text().splitlines()[-1])
    return {"pages": row["pages"], "failures": row["failures"], "seconds": round(row["seconds"], 2),
            "pages_per_s": round(row["pages"] / row["seconds"], 1),
            "cpu_ms_per_page": round(1000 * row["cpu"] / max(1, row["pages"]), 2)}


# -- 4: status pages ----------------------------------------------------------------------


def document(i: int, base: str) -> dict[str, Any]:
    """A 3-5 KB Markdown page, as a crawl document."""
    rng, size, parts = random.Random(i), 3000 + (i * 7919) % 2000, [f"# Page {i}\n"]
    while sum(map(len, parts)) < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 70)))
        link = f"[{words[:20]}]({base}/page/{rng.randint(1, 9999)}.html)"
        parts.append(rng.choice([f"{words.capitalize()}.\n", f"## {words[:40].title()}\n",
                                 f"- {words[:60]}\n- {link}\n"]))
    url = f"{base}/page/{i}.html"
    return {"markdown": "\n".join(parts), "metadata": {
        "sourceURL": url, "url": url, "statusCode": 200, "title": f"Page {i}", "language": "en",
        "description": " ".join(WORDS[i % 20:i % 20 + 8]), "contentType": "text/html",
        "scrapeId": uuid.UUID(int=i).hex, "proxyUsed": "basic"}}


async def _make_job(redis_url: str, docs: int) -> tuple[str, float, int]:
    client = Redis.from_url(redis_url)
    try:
        store = JobStore(client)
        base = "https://docs.example.com"
        job, _ = await store.create("crawl", parse_request("v2", "crawl", {"url": base, "limit": docs}))
        seconds, size = 0.0, 0
        for start in range(0, docs, 100):
            batch = [document(i, base) for i in range(start, min(start + 100, docs))]
            size += sum(len(d["markdown"]) for d in batch)
            started = time.perf_counter()  # the store's time only: compressing and the script
            await store.add(job.id, batch, discovered=len(batch))
            seconds += time.perf_counter() - started
        await store.finish(job.id, "completed")
        return job.id, seconds, size // docs
    finally:
        await client.aclose()


def status_pages(api: str, redis_url: str, docs: int, gets: int) -> dict[str, Any]:
    job_id, write_s, avg = asyncio.run(_make_job(redis_url, docs))
    last = max(0, docs - 100)
    times: dict[int, list[float]] = {0: [], last: []}
    size: dict[int, int] = {}
    with httpx.Client(timeout=60) as client:
        for i in range(gets + 3):  # 3 warm-up rounds
            for skip in times:
                t0 = time.perf_counter()
                r = client.get(f"{api}/v2/crawl/{job_id}?skip={skip}")
                elapsed = 1000 * (time.perf_counter() - t0)
                if r.status_code != 200 or len(r.json()["data"]) != min(100, docs - skip):
                    raise RuntimeError(f"status page skip={skip}: {r.status_code} {r.text[:300]}")
                size[skip] = len(r.content)
                if i >= 3:
                    times[skip].append(elapsed)
    return {"documents": docs, "avg_markdown_bytes": avg, "write_docs_per_s": round(docs / write_s),
            "gets": gets, "first": {**ms(times[0]), "bytes": size[0]},
            "last": {**ms(times[last]), "bytes": size[last], "skip": last}}


# -- the run ------------------------------------------------------------------------------


def start_api(procs: Procs, redis_url: str, tmp: Path) -> str:
    port = free_port()
    serve = procs.start("serve", statecrawl_argv(
        "serve", "--redis-url", redis_url, "--port", str(port), "--scrape-workers", "0",
        "--data-dir", str(tmp / "data")), base_env(), tmp)
    for i in (1, 2):
        procs.start(f"scrape-worker-{i}", statecrawl_argv(
            "worker", "--serve-scrapes", "--redis-url", redis_url, "--out", str(tmp / "scrape-out"),
            "--data-dir", str(tmp / "data")), base_env(), tmp)
    api = f"http://127.0.0.1:{port}"
    wait_http(f"{api}/openapi.json", READY, serve)
    for i in (1, 2):
        name = f"scrape-worker-{i}"
        if not wait_log(procs.log(name), "Spider opened", READY, procs.running[name]):
            raise RuntimeError(f"{name} did not start:\n{procs.tail(name)}")
    return api


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs = Procs(tmp)
    redis_proc, redis_port = start_redis(tmp)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    site_proc, site = start_site(max(args.pages, args.crawl_pages), args.server, tmp)
    figures: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        api = start_api(procs, redis_url, tmp)
        print(f"API at {api}, 2 scrape workers, Redis {redis_url}", flush=True)
        if "latency" in args.only:
            figures["scrape_latency"] = scrape_overhead(api, f"{site}/page/10.html", args.scrapes)
            print(f"1. scrape latency: {figures['scrape_latency']}", flush=True)
        if "throughput" in args.only:
            urls = [f"{site}/page/{i}.html" for i in range(1, args.pages + 1)]
            cpu_pids = {"api": procs.pids("serve"), "redis": [redis_proc.pid],
                        "workers": procs.pids("scrape-worker-1", "scrape-worker-2")}
            site_pids = [site_proc.pid, *descendants(site_proc.pid)]
            figures["scrape_throughput"] = {"api": scrape_throughput(api, urls, cpu_pids, site_pids),
                                            "scrapy": scrapy_list(urls, tmp)}
            print(f"2. scrape throughput: {figures['scrape_throughput']}", flush=True)
        if "status" in args.only:
            figures["status_pages"] = status_pages(api, redis_url, args.status_docs, args.gets)
            print(f"4. status pages: {figures['status_pages']}", flush=True)
        if "crawl" in args.only:
            procs.stop("scrape-worker-1", "scrape-worker-2")  # the crawls get the CPU to themselves
            through_api = api_crawl(api, f"{site}/", args.crawl_pages, procs, redis_url, tmp,
                                    args.job_workers, args.jobs_per_worker)
            plain = statecrawl_crawl(f"{site}/", args.crawl_pages, 2, procs, redis_url, tmp)
            figures["crawl"] = {"api": through_api, "statecrawl": plain}
            if figures["crawl"]["api"].get("error") == "501":
                print("crawl through the API: not available (501)", flush=True)
            print(f"3. crawl: {figures['crawl']}", flush=True)
    finally:
        procs.stop_all()
        site_proc.terminate()
        redis_proc.terminate()
        for proc in (site_proc, redis_proc):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["log_errors"] = {}  # ERROR lines and tracebacks the API and workers logged
    for log in sorted(tmp.rglob("*.log")):
        bad = [line for line in log.read_text(errors="replace").splitlines()
               if " ERROR" in line or "Traceback" in line]
        if bad:
            figures["log_errors"][str(log.relative_to(tmp))] = bad[:10]
    return figures


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) else "-"


def table(f: dict[str, Any], args: argparse.Namespace) -> str:
    rows: list[tuple[str, str, str]] = []
    if "scrape_latency" in f:
        lat = f["scrape_latency"]
        rows += [
            ("POST /v2/scrape p50 / p95", f"{lat['api']['p50_ms']:.1f} / {lat['api']['p95_ms']:.1f} ms", ""),
            ("direct GET + to_markdown p50 / p95",
             f"{lat['direct']['p50_ms']:.1f} / {lat['direct']['p95_ms']:.1f} ms", ""),
            ("scrape overhead p50 / p95", f"{lat['overhead_p50_ms']:.1f} / {lat['overhead_p95_ms']:.1f} ms",
             f"target p50 <= 20 ms: {'met' if lat['overhead_p50_ms'] <= 20 else 'NOT met'}"),
        ]
    if "scrape_throughput" in f:
        a, s = f["scrape_throughput"]["api"], f["scrape_throughput"]["scrapy"]
        rows += [
            (f"scrape throughput, {a['pages']} pages, {CONCURRENCY} clients",
             f"{a['pages_per_s']:.1f} pages/s ({a['failures']} failed)",
             f"{ratio(a['pages_per_s'], s['pages_per_s'])} scrapy (target >= 0.8x)"),
            ("  plain scrapy, 1 process", f"{s['pages_per_s']:.1f} pages/s", ""),
            ("  CPU ms/page: API+workers+redis / scrapy",
             f"{a['cpu_ms_per_page']:.2f} / {s['cpu_ms_per_page']:.2f}",
             " ".join(f"{k} {v:.2f}" for k, v in a["cpu_ms_per_page_by_process"].items())),
            ("  CPU ms/page outside the API: site, clients",
             " / ".join(f"{v:.2f}" for v in a["cpu_ms_per_page_outside"].values()), ""),
            ("  scrape latency under load p50 / p95",
             f"{a['latency']['p50_ms']:.1f} / {a['latency']['p95_ms']:.1f} ms", ""),
        ]
    if "crawl" in f:
        api, sc = f["crawl"]["api"], f["crawl"]["statecrawl"]
        base = sc.get("pages_per_s", math.nan)
        if not api.get("available"):
            shown = "not available (501)" if api.get("error") == "501" else f"failed: {api.get('error')}"
            rows.append((f"crawl through the API, {args.crawl_pages} pages", shown, ""))
        elif "error" in api:
            rows.append((f"crawl through the API, {args.crawl_pages} pages", f"failed: {api['error']}", ""))
        else:
            rows.append((f"crawl through the API, {args.crawl_pages} pages",
                         f"{api['pages_per_s']:.1f} pages/s ({api['wall_pages_per_s']:.1f} wall)",
                         f"{ratio(api['pages_per_s'], base)} statecrawl crawl (target >= 0.95x)"))
        rows.append((f"  statecrawl crawl --workers 2, {args.crawl_pages} pages",
                     f"{base:.1f} pages/s ({sc.get('wall_pages_per_s', math.nan):.1f} wall)",
                     f"{sc.get('done')} done, state {sc.get('state')}"))
    if "status_pages" in f:
        st = f["status_pages"]
        rows.append((f"JobStore.add, {st['documents']} docs of ~{st['avg_markdown_bytes'] // 1024} KB",
                     f"{st['write_docs_per_s']} docs/s", "batches of 100, one client"))
        for which in ("first", "last"):
            page = st[which]
            rows.append((f"GET /v2/crawl/{{id}} at {st['documents']} docs, {which} page p50 / p95",
                         f"{page['p50_ms']:.1f} / {page['p95_ms']:.1f} ms", f"{page['bytes'] // 1024} KiB"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:<34} {note}".rstrip() for name, value, note in rows]
    errors = ", ".join(f"{name}: {len(found)}" for name, found in f["log_errors"].items())
    lines.append(f"ERROR lines / tracebacks in the logs: {errors or 'none'}")
    lines.append(f"load average before {f['load_before']}, after {f['load_after']} "
                 f"({os.cpu_count()} CPUs; figures from one run)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shrink every size for a quick run")
    for name, (default, quick) in SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, metavar="N",
                            help=f"default {default}, {quick} with --quick")
    parser.add_argument("--job-workers", type=int, default=2, metavar="P",
                        help="statecrawl worker --jobs processes for the API crawl (default 2)")
    parser.add_argument("--jobs-per-worker", type=int, default=1, metavar="K",
                        help="--jobs of each job worker (default 1)")
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES), metavar="FIGURE",
                        help=f"run only these figures ({', '.join(FIGURES)}; default all)")
    args = parser.parse_args()
    for name, (default, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    if args.status_docs < 100:
        parser.error("--status-docs must be at least 100")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        figures = run(args, Path(tmp))
    figures["options"] = {k: v for k, v in vars(args).items() if k != "json"}
    print("\n" + table(figures, args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
