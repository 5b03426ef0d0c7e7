"""Pages/s and peak memory of ``render=browser`` vs ``render=auto``, in one run.

    .venv/bin/python bench/render.py [--pages 300] [--every 10] [--rounds 2]

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
whether every script-built page's rendered text reached its item. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
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


def crawl(mode: str, site: RenderSite, redis_url: str, client: redis.Redis,
          tmp: Path) -> tuple[float, int, bool, int]:
    """One crawl; returns (pages/s, peak PSS bytes, every script-built page rendered, items)."""
    crawl_id = f"bench-render-{mode}-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), STATECRAWL_OUTPUT_DIR=str(tmp / crawl_id))
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
    items = {k.decode(): json.loads(v) for k, v in raw.items()}
    complete = all(RENDERED_MARK in (items.get(u) or {}).get("markdown", "")
                   for u in site.script_built_urls())
    return len(items) / seconds, peak, complete, len(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="every Nth page is script-built")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
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
