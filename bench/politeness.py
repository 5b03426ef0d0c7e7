"""The rate each site sees from 4 workers sharing one politeness budget, measured at the servers.

    .venv/bin/python bench/politeness.py [--pages 60] [--hosts 20] [--workers 4]

Each site is a small Python HTTP server on its own 127.0.0.x address
(``tests/_servers.py``: a home page linking to ``--pages`` pages) that records
when every request arrived. Figures:

1. one host, ``DOWNLOAD_DELAY=0.25``: requests/s the server saw and the
   shortest gap between two requests, for 4 statecrawl workers sharing one
   crawl, and for plain Scrapy with the same settings in 4 processes;
2. ``--hosts`` hosts, delay 0.25 s: the aggregate rate (the budget allows
   hosts x 4/s) and the worst host's shortest gap and rate;
3. one host answering its 10th request with 429 ``Retry-After: 2``: how long
   until the next request reached it (no worker may send one sooner).

Rates are requests over the span from a server's first to its last request.
``bench/throughput.py`` gives the cost with no delay set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests._servers import Reply, ScriptedServer, gaps, links_page  # noqa: E402

SPIDER = Path(__file__).resolve().parent / "polite_spider.py"
STATECRAWL = ["-s", 'ADDONS={"statecrawl.Addon": 0}']


def crawl(urls: list[str], workers: int, redis_url: str, *settings: str) -> float:
    """Run *workers* processes of the bench spider on *urls*; returns the wall seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(urls))
    env = {**os.environ, "REDIS_URL": redis_url, "BENCH_URLS": f.name,
           "BENCH_CRAWL_ID": f"polite-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(ROOT)}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(SPIDER)]
    for s in settings:
        cmd += ["-s", s] if not s.startswith("-") else [s]
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    os.unlink(f.name)
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed:\n" + "\n".join(e[-2000:] for e in errors))
    return time.monotonic() - started


def seen(server: ScriptedServer) -> tuple[int, float, float]:
    """(requests, requests/s over the first-to-last span, shortest gap s) a server saw."""
    times = sorted(t for t, _ in server.times)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return len(times), (len(times) - 1) / span if span else 0.0, min(gaps(times), default=0.0)


def sites(n: int, pages: int, script: dict[str, list[Reply]] | None = None) -> list[ScriptedServer]:
    return [ScriptedServer({"/": [links_page(pages)], **(script or {})}, host=f"127.0.0.{i + 1}")
            for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=60, help="pages per host (default: 60)")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.25)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-polite-"))
    redis, port = start_redis(tmp)
    redis_url = f"redis://127.0.0.1:{port}/0"
    out: dict[str, object] = {"workers": args.workers, "delay": args.delay, "pages": args.pages,
                              "load_before": os.getloadavg()[0]}
    delay = f"DOWNLOAD_DELAY={args.delay}"
    try:
        print(f"{args.workers} workers, delay {args.delay}s (budget {1 / args.delay:g} req/s "
              "per host), measured at the servers", flush=True)
        for name, extra in (("statecrawl", STATECRAWL), ("scrapy", [])):
            [site] = sites(1, args.pages)
            with site:
                secs = crawl([site.url + "/"], args.workers, redis_url, delay, *extra)
                n, rate, gap = seen(site)
            out[f"one_host_{name}"] = {"requests": n, "rate": rate, "min_gap": gap, "wall": secs}
            print(f"  one host, {name:<10}: {n:4d} requests, {rate:5.2f} req/s, "
                  f"shortest gap {gap * 1000:6.1f} ms", flush=True)

        servers = sites(args.hosts, args.pages)
        for s in servers:
            s.__enter__()
        try:
            secs = crawl([s.url + "/" for s in servers], args.workers, redis_url, delay, *STATECRAWL)
            per = [seen(s) for s in servers]
        finally:
            for s in servers:
                s.__exit__()
        total = sum(n for n, _, _ in per)
        first = min(t for s in servers for t, _ in s.times)
        last = max(t for s in servers for t, _ in s.times)
        agg = total / (last - first)
        out["hosts"] = {"hosts": args.hosts, "requests": total, "rate": agg,
                        "budget": args.hosts / args.delay,
                        "max_host_rate": max(r for _, r, _ in per),
                        "min_gap": min(g for _, _, g in per), "wall": secs}
        print(f"  {args.hosts} hosts, statecrawl: {total} requests, {agg:5.1f} req/s of "
              f"{args.hosts / args.delay:g} allowed ({agg / (args.hosts / args.delay):.2f}x); "
              f"busiest host {max(r for _, r, _ in per):.2f} req/s, shortest gap "
              f"{min(g for _, _, g in per) * 1000:.1f} ms", flush=True)

        script = {"/p/9": [Reply(429, b"slow down", {"Retry-After": "2"}), Reply()]}
        [site] = sites(1, args.pages, script)  # type: ignore[arg-type]
        with site:
            crawl([site.url + "/"], args.workers, redis_url, "DOWNLOAD_DELAY=0.05", *STATECRAWL)
            refused = next(t for t, path in site.times if path == "/p/9")
            after = min(t for t, _ in site.times if t > refused) - refused
        out["retry_after"] = {"retry_after": 2.0, "next_request_after": after}
        print(f"  429 with Retry-After: 2 -> next request {after:.3f} s later", flush=True)
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"load average {out['load_before']:.2f} before, {out['load_after']:.2f} after")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
