"""``python -m statecrawl.demo.run --out output``: the demo behind ``make demo``.

Serves the 60-page demo site (:mod:`statecrawl.demo.site`) on a free port,
crawls it with two workers sharing the embedded Redis (data dir
``.statecrawl``), exactly as ``statecrawl crawl <site> --workers 2`` would,
then says what came out: pages crawled, failures by type, where the Markdown
and JSON Lines went, and the first lines of one Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from statecrawl import cli
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import StatecrawlError
from statecrawl.frontier.connection import DEFAULT_DATA_DIR, connect
from statecrawl.frontier.embedded import ensure_embedded_redis
from statecrawl.frontier.store import CrawlStore
from statecrawl.output.files import markdown_relpath

__all__ = ["main"]


async def _summary(redis_url: str, crawl_id: str) -> tuple[dict[str, Any], Counter[str]]:
    client = await connect(redis_url, name="statecrawl:demo")
    try:
        store = CrawlStore(client, crawl_id)
        failures: Counter[str] = Counter()
        async for _key, item in store.iter_items():
            error = item.get("error") if isinstance(item, dict) else None
            if error:
                failures[str(error.get("type", "unknown"))] += 1
        return await store.status(), failures
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statecrawl.demo.run", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output", help="output directory (default: %(default)s)")
    parser.add_argument("--pages", type=int, default=60, help="pages of the demo site (default: 60)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="embedded Redis data dir")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        redis_url = ensure_embedded_redis(args.data_dir)  # the embedded one, whatever REDIS_URL says
    except StatecrawlError as exc:
        print(f"statecrawl demo: error: {exc}", file=sys.stderr)
        return 1
    crawl_id = "demo-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    with DemoSite(pages=args.pages) as site:
        print(f"demo site: {args.pages} pages at {site.url}", flush=True)
        code = cli.main([
            "--redis-url", redis_url, "crawl", site.url + "/", "--out", str(out),
            "--workers", str(args.workers), "--crawl-id", crawl_id,
        ])
        index_url = site.url + "/"
    status, failures = asyncio.run(_summary(redis_url, crawl_id))
    print()
    print(f"pages crawled: {status['done']} ({status['failed']} failed)")
    for kind, count in failures.most_common():
        print(f"  {kind}: {count}")
    print(f"Markdown:    {out / 'markdown'}/")
    for feed in sorted(out.glob(f"pages-{crawl_id}-*.jsonl")):
        print(f"JSON Lines:  {feed}")
    print(f"worker logs: {out / 'logs'}/")
    sample = out / markdown_relpath(index_url)
    if sample.is_file():
        print(f"\n{sample}:")
        for line in sample.read_text(encoding="utf-8").splitlines()[:12]:
            print(f"  {line}")
    print(f"\nstatus: statecrawl --data-dir {args.data_dir} status {crawl_id}")
    if code != 0 or status["state"] != "finished":
        print(f"statecrawl demo: error: the crawl did not finish (state {status['state']})", file=sys.stderr)
        return code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
