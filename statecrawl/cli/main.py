"""The ``statecrawl`` command: start, join, watch, export and cancel crawls.

::

    statecrawl crawl URL [--out DIR] [--workers N] [--crawl-id ID] ...   start or resume a crawl
    statecrawl worker CRAWL_ID [--out DIR]     join a running crawl, from any machine
    statecrawl worker --serve-scrapes          a worker of the API's scrapes (runs until stopped)
    statecrawl worker --jobs N                 workers of the API's crawl jobs, N jobs at once
    statecrawl status CRAWL_ID [--watch [S]]   one crawl: counters, rates, workers, hosts
    statecrawl export CRAWL_ID --out DIR       pages.jsonl + Markdown files from Redis
    statecrawl cancel CRAWL_ID                 stop every worker of a crawl
    statecrawl list [--json]                   crawls in this Redis, with their Redis bytes
    statecrawl purge CRAWL_ID [--dry-run] [--force]   remove every key of a crawl
    statecrawl hosts CRAWL_ID [--delay S] [--concurrency N] [--host H]   a polite crawl's hosts
    statecrawl serve [--port 3002] [--workers N] [--api-key KEY]   the HTTP API
    statecrawl metrics [--listen 127.0.0.1:9108] [--once]   Prometheus metrics of the crawls
    statecrawl redis status|stop               the embedded Redis

Every command finds Redis the same way: ``--redis-url``, else
``STATECRAWL_REDIS_URL`` / ``REDIS_URL``, else the embedded Redis under
``--data-dir`` (started on demand). Workers are plain ``scrapy crawl site``
processes given that one URL in ``REDIS_URL``, so they all share the crawl.

Errors are one line, ``statecrawl: error: <message>``: exit status 2 for a
:class:`~statecrawl.exceptions.ConfigError` (bad argument), 1 otherwise.
``crawl`` also exits 1 when the crawl did not finish, when no page of it
succeeded, or when entries of it were quarantined; 128 + N after signal N
(SIGINT, SIGTERM, or SIGHUP when the terminal goes away), once the workers
have stopped. ``export`` exits 1 when it had to skip unreadable items.
A terminal that is gone (EIO) or a closed pipe never turns into a traceback:
output to it is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from statecrawl.api.scrape import SCRAPE_SPIDER, scrape_crawl_id
from statecrawl.cli.common import error as _error
from statecrawl.cli.common import one_line as _one_line
from statecrawl.cli.common import open_store, redis_url, tolerant_stdio
from statecrawl.cli.crawl import SPIDER, cmd_crawl, default_crawl_id
from statecrawl.cli.crawls import add_parsers as add_crawls_parsers
from statecrawl.cli.hosts import add_parser as add_hosts_parser
from statecrawl.cli.jobs import run_jobs
from statecrawl.cli.metrics import add_parser as add_metrics_parser
from statecrawl.cli.serve import add_parser as add_serve_parser
from statecrawl.cli.status import add_parser as add_status_parser
from statecrawl.cli.workers import run_worker, worker_command, worker_env
from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.frontier.connection import DEFAULT_DATA_DIR
from statecrawl.frontier.embedded import embedded_status, stop_embedded_redis
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier.serialize import loads
from statecrawl.output.export import ExportResult, crawl_sink, export_crawl

__all__ = ["build_parser", "cmd_crawl", "default_crawl_id", "main"]


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version("statecrawl")
    except importlib.metadata.PackageNotFoundError:
        import statecrawl

        return str(getattr(statecrawl, "__version__", "unknown"))


# -- Redis access ----------------------------------------------------------------------


# -- commands ------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    if args.serve_scrapes and args.jobs:
        raise ConfigError("--serve-scrapes and --jobs are two kinds of worker: start each apart")
    if args.serve_scrapes:
        return _serve_scrapes(args)
    if args.jobs:
        if args.crawl_id is not None:
            raise ConfigError("--jobs serves every crawl job of the API: give no crawl id")
        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        return run_jobs(redis_url(args), out, args.jobs)
    if args.crawl_id is None:
        raise ConfigError("give the crawl id to join (or --serve-scrapes)")
    meta, url = asyncio.run(_crawl_meta(args))
    state = meta.get("state")
    if state == "cancelled":
        raise StatecrawlError(f"crawl {args.crawl_id!r} was cancelled")
    if "args" not in meta:
        raise StatecrawlError(f"crawl {args.crawl_id!r} has no recorded spider arguments to join with")
    spider_args = loads(meta["args"], "spider arguments")
    spider = meta.get("spider") or SPIDER
    try:  # all of this comes from Redis: whoever can write there must not get options in
        cmd = worker_command(spider, args.crawl_id, spider_args)
    except ConfigError as exc:
        raise StatecrawlError(
            f"crawl {args.crawl_id!r}: refusing to start a worker from its metadata in Redis "
            f"({exc}); fix or delete the crawl"
        ) from None
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"joining crawl {args.crawl_id} ({spider} {spider_args.get('url', '')}, {state})",
          file=sys.stderr, flush=True)
    code, signum = run_worker(cmd, worker_env(url, out, meta.get("epoch")))
    if signum is not None:
        print(f"interrupted: the worker stopped; rejoin with: statecrawl worker {args.crawl_id}",
              file=sys.stderr, flush=True)
        return 128 + signum
    return code


def _serve_scrapes(args: argparse.Namespace) -> int:
    """One worker of the API's scrape service crawl: ``scrapy crawl scrape``, until stopped."""
    crawl_id = validate_crawl_id(scrape_crawl_id(args.crawl_id))
    url = redis_url(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"serving scrapes of crawl {crawl_id} (stop with Ctrl-C)", file=sys.stderr, flush=True)
    env = worker_env(url, out)
    env["STATECRAWL_NET_GUARD"] = "true"  # API users' URLs: no loopback, private or metadata address
    code, signum = run_worker(worker_command(SCRAPE_SPIDER, crawl_id, {}), env)
    return 128 + signum if signum is not None else code


async def _crawl_meta(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    validate_crawl_id(args.crawl_id)
    url = redis_url(args)
    async with open_store(args, args.crawl_id, url=url) as store:
        raw = await store.client.hgetall(store.keys.meta)
    # undecodable bytes become U+FFFD, which no check lets through
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}, url


def cmd_export(args: argparse.Namespace) -> int:
    result = asyncio.run(_export(args, Path(args.out)))
    print(f"exported {result.pages} pages ({result.failed} failed) to {Path(args.out) / 'pages.jsonl'}")
    print(f"wrote {result.markdown_files} Markdown files under {Path(args.out) / 'markdown'}")
    if not result.skipped:
        return 0
    named = "; ".join(f"{key!r}: {_one_line(reason)}" for key, reason in result.skipped_examples)
    more = result.skipped - len(result.skipped_examples)
    _error(f"skipped {result.skipped} unreadable item{'' if result.skipped == 1 else 's'} of crawl "
           f"{args.crawl_id!r} ({named}{f'; and {more} more' if more else ''}); "
           "everything else was exported")
    return 1


async def _export(args: argparse.Namespace, out: Path) -> ExportResult:
    async with open_store(args, args.crawl_id) as store:
        sink = await crawl_sink(store, args.sink or os.environ.get("STATECRAWL_SINK") or "redis")
        return await export_crawl(store, out, sink)


def cmd_cancel(args: argparse.Namespace) -> int:
    asyncio.run(_cancel(args))
    print(f"crawl {args.crawl_id} cancelled; its workers stop after their current requests")
    return 0


async def _cancel(args: argparse.Namespace) -> None:
    async with open_store(args, args.crawl_id) as store:
        await store.cancel()


def cmd_redis(args: argparse.Namespace) -> int:
    if args.action == "stop":
        stopped = stop_embedded_redis(args.data_dir)
        print(f"embedded Redis {'stopped' if stopped else 'was not running'} (data dir {args.data_dir})")
        return 0
    for name, value in embedded_status(args.data_dir).items():
        print(f"{name:<9} {'-' if value is None else value}")
    return 0


# -- argument parsing --------------------------------------------------------------------


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after the command name."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--redis-url", metavar="URL", default=argparse.SUPPRESS if suppress else None,
                        help="Redis to use (default: $STATECRAWL_REDIS_URL, $REDIS_URL, else the "
                             "embedded Redis)")
    parser.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS if suppress else DEFAULT_DATA_DIR,
                        help=f"where the embedded Redis keeps its data (default: {DEFAULT_DATA_DIR})")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statecrawl", parents=[_global_options(False)],
        description="Crawl sites with stateless Scrapy workers sharing their state in Redis.",
    )
    parser.add_argument("--version", action="version", version=f"statecrawl {_version()}")
    common = [_global_options(True)]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crawl", parents=common, help="start (or resume) a crawl of one site")
    p.add_argument("url", help="start URL, e.g. https://example.com/")
    p.add_argument("--out", default="output", metavar="DIR", help="output directory (default: %(default)s)")
    p.add_argument("--limit", type=_count(0), metavar="N", help="at most N requests in the whole crawl")
    p.add_argument("--max-depth", type=_count(0), metavar="N", help="follow links at most N levels deep")
    p.add_argument("--include", metavar="RE", help="only follow URLs matching this regex")
    p.add_argument("--exclude", metavar="RE", help="never follow URLs matching this regex")
    p.add_argument("--allow-subdomains", action="store_true", help="also crawl subdomains")
    p.add_argument("--render", choices=("http", "browser", "auto"), default=None,
                   help="fetch pages over HTTP, render them in Chromium, or auto: HTTP, and "
                        "Chromium for pages that look script-built (default: http)")
    p.add_argument("--workers", type=_count(1), default=1, metavar="N", help="worker processes (default: 1)")
    p.add_argument("--delay", type=float, metavar="S",
                   help="least time between two requests of a host, for all workers together "
                        "(the crawl's politeness budget; change it later with `statecrawl hosts`)")
    p.add_argument("--host-concurrency", type=_count(1), metavar="N",
                   help="most requests of a host in flight at once, all workers together")
    p.add_argument("--crawl-id", metavar="ID", help="crawl id; an existing one is resumed (default: <host>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("worker", parents=common, help="join an existing crawl with one worker, "
                                                      "or serve the API's scrapes")
    p.add_argument("crawl_id", nargs="?", help="the crawl to join (with --serve-scrapes: the "
                                              "scrape crawl, default api-scrape)")
    p.add_argument("--serve-scrapes", action="store_true",
                   help="serve POST /v1|v2/scrape: a long-running worker of the scrape service "
                        "crawl (scrapy crawl scrape)")
    p.add_argument("--jobs", type=_count(1), metavar="N",
                   help="serve the API's crawl jobs (POST /v1|v2/crawl): run workers for at most "
                        "N jobs at once, the jobs with the fewest workers first")
    p.add_argument("--out", default="output", metavar="DIR", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_worker)

    add_status_parser(sub, common, _count)

    p = sub.add_parser("export", parents=common, help="write a crawl's pages from Redis to files")
    p.add_argument("crawl_id")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--sink", metavar="URL", help="where the crawl's items are: redis, a directory "
                   "or s3://bucket/prefix (default: $STATECRAWL_SINK, else redis)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cancel", parents=common, help="cancel a crawl; its workers exit")
    p.add_argument("crawl_id")
    p.set_defaults(func=cmd_cancel)

    add_crawls_parsers(sub, common)

    add_hosts_parser(sub, common, _count)

    add_serve_parser(sub, common, _count)

    add_metrics_parser(sub, common, _count)

    p = sub.add_parser("redis", parents=common, help="the embedded Redis: status or stop")
    p.add_argument("action", choices=("status", "stop"))
    p.set_defaults(func=cmd_redis)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with tolerant_stdio():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: argparse has printed them
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _error(exc)
        return 2
    except StatecrawlError as exc:
        _error(exc)
        return 1
    except RedisError as exc:
        _error(f"Redis error: {exc}")
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `statecrawl list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
