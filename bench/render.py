"""Rendering: pages/s and memory of the modes, and what settling captures and costs.

    .venv/bin/python bench/render.py [--only throughput|settle] [--pages 300] [--every 10]
                                     [--rounds 2] [--runs 10] [--timing-only]

**Throughput** (``--only throughput``): ``render=browser`` vs ``render=auto``.

The site is :class:`statecrawl.demo.apps.RenderSite`: ``--pages`` pages of
which every ``--every``-th is script-built (its text and links exist only
after JavaScript ran). Each round crawls it once per mode with one ``scrapy
crawl site`` worker (the project's settings, Chromium from the system) on a
private ``redis-server``, alternating the modes:

* ``browser``: every page rendered in Chromium (plain scrapy-playwright);
* ``auto``: HTTP, and Chromium for the pages that look script-built.

Printed per mode (median over rounds): pages/s (items over the crawl's wall
time, process start-up included, as a user waits for it), peak memory (PSS)
of the worker's whole process tree (Scrapy, Playwright's driver, Chromium), and
whether every script-built page's rendered text reached its item.

**Settling** (``--only settle``), on :class:`statecrawl.demo.settle.SettleSite`
(13 pages whose content arrives after ``load``, 5 static pages):

* *markers captured*: ``--runs`` crawls of the corpus (``scrapy crawl site
  -a render=browser``, then ``render=auto``, default settings), each page's
  marker looked for in its item's Markdown; and one crawl with settling off
  (``-a settle_ms=0``), the behaviour before it existed;
* *cost*: each page rendered ``--runs`` times with settling on and off
  (alternating, one Chromium, the worker's launch options), timed from
  ``goto`` to the HTML in hand; printed: the median over pages of each
  page's median extra time, for the static pages and for the corpus
  (``--timing-only``: this part alone).

Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from statecrawl.demo.apps import RENDERED_MARK, RenderSite  # noqa: E402
from statecrawl.demo.settle import CORPUS, SettleSite  # noqa: E402
from statecrawl.frontier.item_codec import load_item

MODES = ("browser", "auto")


def _pss(pid: int) -> int:
    """Proportional set size: shared pages split among the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> int:
    """Memory of *root* and all its descendants: the sum of their PSS.

    RSS would count Chromium's shared pages once per process; PSS splits
    them among the processes that share them.
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
    total = 0
    for pid in parents:
        p = pid
        while p != root and p in parents and p > 1:
            p = parents[p]
        if p == root:
            total += _pss(pid)
    return total


def worker_env(redis_url: str, out: Path) -> dict[str, str]:
    """The environment of a ``scrapy crawl site`` worker: this Redis, output under *out*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), STATECRAWL_OUTPUT_DIR=str(out))
    return env


def crawl(mode: str, site: RenderSite, redis_url: str, client: redis.Redis,
          tmp: Path) -> tuple[float, int, bool, int]:
    """One crawl; returns (pages/s, peak PSS bytes, every script-built page rendered, items)."""
    crawl_id = f"bench-render-{mode}-{uuid.uuid4().hex[:6]}"
    env = worker_env(redis_url, tmp / crawl_id)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={site.url}/",
           "-a", f"crawl_id={crawl_id}", "-a", f"render={mode}", "-s", "LOG_LEVEL=WARNING",
           "-s", "RETRY_TIMES=0"]
    peak = 0
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, tree_memory(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{mode} crawl failed:\n{err[-3000:]}")
    raw = client.hgetall(f"sc:{{{crawl_id}}}:items")
    items = {k.decode(): load_item(v) for k, v in raw.items()}
    complete = all(RENDERED_MARK in (items.get(u) or {}).get("markdown", "")
                   for u in site.script_built_urls())
    return len(items) / seconds, peak, complete, len(items)


def corpus_crawl(site: SettleSite, redis_url: str, client: redis.Redis, tmp: Path,
                 *args: str) -> list[str]:
    """One crawl of the settle corpus; why each page missing its marker missed it."""
    crawl_id = f"bench-settle-{uuid.uuid4().hex[:6]}"
    env = worker_env(redis_url, tmp / crawl_id)
    cmd = [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={site.url}/settle/",
           "-a", f"crawl_id={crawl_id}", "-s", "LOG_LEVEL=WARNING", "-s", "RETRY_TIMES=0", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"settle crawl failed:\n{done.stderr[-3000:]}")
    raw = client.hgetall(f"sc:{{{crawl_id}}}:items")
    items = {k.decode(): load_item(v) for k, v in raw.items()}
    missed = []
    for name, url in site.corpus_urls().items():
        item = items.get(url)
        if item is None:
            missed.append(f"{name}: no item")
        elif site.marker(name) not in (item.get("markdown") or ""):
            error = (item.get("error") or {}).get("type")
            missed.append(f"{name}: {error or repr((item.get('markdown') or '')[:80])}")
    return missed


async def settle_timing(site: SettleSite, runs: int) -> dict[str, dict[bool, list[float]]]:
    """Seconds from goto to HTML per page, settling off (False) and on (True), *runs* each."""
    from playwright.async_api import async_playwright
    from scrapy.settings import Settings

    from statecrawl.render.browser import launch_options
    from statecrawl.render.settle import Settle, settle_page

    settle = Settle(40, 5000)  # the defaults
    urls = {**site.corpus_urls(), **site.static_urls()}
    times: dict[str, dict[bool, list[float]]] = {n: {False: [], True: []} for n in urls}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options(Settings()))
        context = await browser.new_context()
        for run in range(runs):
            for name, url in urls.items():
                for on in ((False, True) if run % 2 else (True, False)):
                    page = await context.new_page()
                    if on:
                        await settle.init_page(page, None)  # type: ignore[arg-type]
                    started = time.monotonic()
                    await page.goto(url)
                    if on:
                        await settle_page(page, settle.quiet_ms, settle.max_ms)
                    await page.content()
                    times[name][on].append(time.monotonic() - started)
                    await page.close()
        await browser.close()
    return times


def run_settle(args: argparse.Namespace, tmp: Path, redis_url: str, client: redis.Redis) -> None:
    import asyncio

    with SettleSite() as site:
        print(f"settle corpus: {len(CORPUS)} pages at {site.url}/settle/", flush=True)
        if not args.timing_only:
            crawl_corpus(args, site, redis_url, client, tmp)
        times = asyncio.run(settle_timing(site, args.runs))
    report_timing(times, args.runs)


def crawl_corpus(args: argparse.Namespace, site: SettleSite, redis_url: str,
                 client: redis.Redis, tmp: Path) -> None:
    """Markers captured: once with settling off, then --runs crawls per mode."""
    off = len(CORPUS) - len(corpus_crawl(site, redis_url, client, tmp, "-a", "render=browser",
                                         "-a", "settle_ms=0"))
    print(f"settling off (settle_ms=0), render=browser: {off}/{len(CORPUS)} markers", flush=True)
    for mode in ("browser", "auto"):
        counts = []
        for run in range(args.runs):
            missed = corpus_crawl(site, redis_url, client, tmp, "-a", f"render={mode}")
            counts.append(len(CORPUS) - len(missed))
            print(f"  render={mode} run {run + 1}/{args.runs}: {counts[-1]}/{len(CORPUS)} "
                  f"markers" + (f"; missed {'; '.join(missed)}" if missed else ""), flush=True)
        full = sum(c == len(CORPUS) for c in counts)
        print(f"render={mode}: every marker captured in {full} of {args.runs} runs "
              f"({sum(counts)}/{len(CORPUS) * args.runs} markers)", flush=True)


def report_timing(times: dict[str, dict[bool, list[float]]], runs: int) -> None:
    extra = {name: 1000 * (statistics.median(t[True]) - statistics.median(t[False]))
             for name, t in times.items()}
    static = [v for n, v in extra.items() if n.startswith("static-")]
    corpus = [v for n, v in extra.items() if not n.startswith("static-")]
    print(f"\nextra time per page that settling costs (median over pages of the per-page "
          f"median of {runs} renders):")
    print(f"  static pages: {statistics.median(static):6.0f} ms   "
          f"(each: {', '.join(f'{v:.0f}' for v in static)})")
    print(f"  corpus pages: {statistics.median(corpus):6.0f} ms   "
          f"(each: {', '.join(f'{n} {v:.0f}' for n, v in extra.items() if n in CORPUS)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("throughput", "settle"), default=None)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="every Nth page is script-built")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10, help="settle: crawls and renders per page")
    parser.add_argument("--timing-only", action="store_true",
                        help="settle: only the cost per page, no corpus crawls")
    args = parser.parse_args()
    if args.only != "throughput":
        with tempfile.TemporaryDirectory(prefix="statecrawl-settle-") as tmpdir:
            server, port = start_redis(Path(tmpdir))
            client = redis.Redis(port=port)
            try:
                run_settle(args, Path(tmpdir), f"redis://127.0.0.1:{port}/0", client)
            finally:
                client.close()
                server.terminate()
                server.wait(10)
        if args.only == "settle":
            return 0
    with tempfile.TemporaryDirectory(prefix="statecrawl-render-") as tmpdir:
        tmp = Path(tmpdir)
        server, port = start_redis(tmp)
        client = redis.Redis(port=port)
        results: dict[str, list[tuple[float, int, bool, int]]] = {m: [] for m in MODES}
        try:
            with RenderSite(pages=args.pages, script_every=args.every) as site:
                print(f"site: {args.pages} pages, {len(site.script_built_urls())} script-built, "
                      f"at {site.url}", flush=True)
                for r in range(args.rounds):
                    for mode in MODES:
                        pps, rss, complete, n = crawl(mode, site, f"redis://127.0.0.1:{port}/0",
                                                      client, tmp)
                        results[mode].append((pps, rss, complete, n))
                        print(f"round {r + 1}/{args.rounds}  {mode:<8} {n} items  {pps:6.1f} "
                              f"pages/s  peak memory {rss / 2**20:6.0f} MiB  script-built pages "
                              f"rendered: {'all' if complete else 'NOT ALL'}", flush=True)
        finally:
            client.close()
            server.terminate()
            server.wait(10)
    base = statistics.median(r[0] for r in results["browser"])
    print(f"\nmedians over {args.rounds} rounds:")
    for mode in MODES:
        pps = statistics.median(r[0] for r in results[mode])
        rss = statistics.median(r[1] for r in results[mode])
        complete = all(r[2] for r in results[mode])
        print(f"  {mode:<8} {pps:6.1f} pages/s  {pps / base:5.2f}x browser  peak memory "
              f"{rss / 2**20:5.0f} MiB  every script-built page rendered: {complete}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
