"""The ``statecrawl`` command: start, join, watch, export and cancel crawls.

::

    statecrawl crawl URL [--out DIR] [--workers N] [--crawl-id ID] ...   start or resume a crawl
    statecrawl worker CRAWL_ID [--out DIR]     join a running crawl, from any machine
    statecrawl status CRAWL_ID [--json]        counters of one crawl
    statecrawl export CRAWL_ID --out DIR       pages.jsonl + Markdown files from Redis
    statecrawl cancel CRAWL_ID                 stop every worker of a crawl
    statecrawl list                            crawls in this Redis
    statecrawl redis status|stop               the embedded Redis

Every command finds Redis the same way: ``--redis-url``, else
``STATECRAWL_REDIS_URL`` / ``REDIS_URL``, else the embedded Redis under
``--data-dir`` (started on demand). Workers are plain ``scrapy crawl site``
processes given that one URL in ``REDIS_URL``, so they all share the crawl.

Errors are one line, ``statecrawl: error: <message>``: exit status 2 for a
:class:`~statecrawl.exceptions.ConfigError` (bad argument), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from statecrawl._progress import (
    Progress, format_duration, log_tail, start_workers, supervise, worker_command, worker_env,
)
from statecrawl.connection import DEFAULT_DATA_DIR, connect, redact_url, resolve_redis_url
from statecrawl.embedded import embedded_status, stop_embedded_redis
from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.keys import CRAWLS_KEY, validate_crawl_id
from statecrawl.export import ExportResult, export_crawl
from statecrawl.scope import Scope, validate_start_url
from statecrawl.serialize import loads
from statecrawl.store import CrawlStore

__all__ = ["build_parser", "default_crawl_id", "main"]

SPIDER = "site"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def default_crawl_id(url: str, now: datetime | None = None) -> str:
    """``<host>-<YYYYmmdd-HHMMSS>`` (local time), reduced to the characters a crawl id allows."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    host = _UNSAFE_ID.sub("-", urlsplit(url).hostname or "crawl").strip("-.") or "crawl"
    return f"{host[: 64 - len(stamp) - 1]}-{stamp}"


# -- Redis access ----------------------------------------------------------------------


def _redis_url(args: argparse.Namespace) -> str:
    settings = {"STATECRAWL_REDIS_URL": args.redis_url} if args.redis_url else {}
    return resolve_redis_url(settings, args.data_dir)


@contextlib.asynccontextmanager
async def _open_store(
    args: argparse.Namespace, crawl_id: str, *, must_exist: bool = True, url: str | None = None
) -> AsyncIterator[CrawlStore]:
    validate_crawl_id(crawl_id)
    url = url or _redis_url(args)
    client = await connect(url, name="statecrawl:cli")
    try:
        store = CrawlStore(client, crawl_id)
        if must_exist and not await store.exists():
            raise StatecrawlError(
                f"no crawl {crawl_id!r} in Redis at {redact_url(url)} "
                "('statecrawl list' shows the crawls there)"
            )
        yield store
    finally:
        await client.aclose()


# -- commands ------------------------------------------------------------------------------


def cmd_crawl(args: argparse.Namespace) -> int:
    start_url = validate_start_url(args.url)
    Scope(start_url, allow_subdomains=args.allow_subdomains, include=args.include, exclude=args.exclude)
    crawl_id = validate_crawl_id(args.crawl_id) if args.crawl_id else default_crawl_id(start_url)
    spider_args = {
        "url": start_url, "limit": args.limit, "max_depth": args.max_depth, "include": args.include,
        "exclude": args.exclude, "allow_subdomains": args.allow_subdomains, "render": args.render,
    }
    out = Path(args.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_crawl(args, crawl_id, spider_args, out, logs))


async def _crawl(
    args: argparse.Namespace, crawl_id: str, spider_args: dict[str, Any], out: Path, logs: Path
) -> int:
    url = _redis_url(args)
    async with _open_store(args, crawl_id, must_exist=False, url=url) as store:
        before = await store.status()
        if before["state"] == "cancelled":
            raise StatecrawlError(f"crawl {crawl_id!r} was cancelled; start a new one with another --crawl-id")
        if before["start_url"] and before["start_url"] != spider_args["url"]:
            raise ConfigError(
                f"crawl {crawl_id!r} crawls {before['start_url']}, not {spider_args['url']}; "
                "use another --crawl-id"
            )
        print(f"crawl id: {crawl_id} (resume with --crawl-id {crawl_id})", flush=True)
        if before["state"] != "unknown":
            print(f"resuming: {before['done']} pages done, {before['queued']} queued", flush=True)
        cmd = worker_command(SPIDER, crawl_id, spider_args)
        env = worker_env(url, out)
        log_paths = [logs / f"worker-{i}.log" for i in range(1, args.workers + 1)]
        started = time.monotonic()
        procs = start_workers(cmd, env, log_paths)
        progress = Progress(sys.stderr, enabled=not args.quiet)
        signum = await supervise(procs, store.status, progress)
        elapsed = time.monotonic() - started
        final = await store.status()
    if signum is not None:
        print(f"interrupted: workers stopped after {final['done']} pages; "
              f"resume with: statecrawl crawl {spider_args['url']} --crawl-id {crawl_id}", file=sys.stderr)
        return 128 + signum
    new = final["done"] - before["done"]
    state = final["state"] if final["state"] != "unknown" else "not started"
    print(f"crawl {crawl_id} {state}: {final['done']} pages ({final['failed']} failed) "
          f"in {format_duration(elapsed)}, {new / elapsed if elapsed else 0:.1f} pages/s")
    print(f"output: {out} (Markdown in markdown/, JSON Lines in pages-{crawl_id}-*.jsonl, logs in logs/)")
    failed = [(i, p.returncode, path) for i, (p, path) in enumerate(zip(procs, log_paths), 1) if p.returncode]
    for i, code, path in failed:
        _error(f"worker {i} exited with status {code}; read {path}\n{log_tail(path)}".rstrip())
    if failed:
        return 1
    if final["state"] != "finished":
        _error(f"crawl {crawl_id!r} is {final['state']}, not finished")
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    meta, url = asyncio.run(_crawl_meta(args))
    state = meta.get("state")
    if state == "cancelled":
        raise StatecrawlError(f"crawl {args.crawl_id!r} was cancelled")
    if "args" not in meta:
        raise StatecrawlError(f"crawl {args.crawl_id!r} has no recorded spider arguments to join with")
    spider_args = loads(meta["args"], "spider arguments")
    if not isinstance(spider_args, dict):
        raise StatecrawlError(f"crawl {args.crawl_id!r}: spider arguments are not a JSON object")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spider = meta.get("spider") or SPIDER
    print(f"joining crawl {args.crawl_id} ({spider} {spider_args.get('url', '')}, {state})",
          file=sys.stderr, flush=True)
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        worker_command(spider, args.crawl_id, spider_args), env=worker_env(url, out)
    )
    interrupted = False
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # the worker got the SIGINT too and is closing
            interrupted = True
    return 130 if interrupted else code


async def _crawl_meta(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    validate_crawl_id(args.crawl_id)
    url = _redis_url(args)
    async with _open_store(args, args.crawl_id, url=url) as store:
        raw = await store.client.hgetall(store.keys.meta)
    return {k.decode(): v.decode() for k, v in raw.items()}, url


def cmd_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_status(args))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    width = 18
    for name, value in status.items():
        if name == "stats":
            continue
        if name in ("created_at", "finished_at") and value is not None:
            value = datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
        print(f"{name:<{width}} {'-' if value is None else value}")
    for name, value in sorted(status["stats"].items()):
        print(f"{'stats.' + name:<{width}} {value}")
    return 0


async def _status(args: argparse.Namespace) -> dict[str, Any]:
    async with _open_store(args, args.crawl_id) as store:
        return await store.status()


def cmd_export(args: argparse.Namespace) -> int:
    items, failed, markdown = asyncio.run(_export(args, Path(args.out)))
    print(f"exported {items} pages ({failed} failed) to {Path(args.out) / 'pages.jsonl'}")
    print(f"wrote {markdown} Markdown files under {Path(args.out) / 'markdown'}")
    return 0


async def _export(args: argparse.Namespace, out: Path) -> ExportResult:
    async with _open_store(args, args.crawl_id) as store:
        return await export_crawl(store, out)


def cmd_cancel(args: argparse.Namespace) -> int:
    asyncio.run(_cancel(args))
    print(f"crawl {args.crawl_id} cancelled; its workers stop after their current requests")
    return 0


async def _cancel(args: argparse.Namespace) -> None:
    async with _open_store(args, args.crawl_id) as store:
        await store.cancel()


def cmd_list(args: argparse.Namespace) -> int:
    rows = asyncio.run(_list(args))
    if not rows:
        print("no crawls")
        return 0
    width = max(len("CRAWL ID"), *(len(r[0]) for r in rows))
    print(f"{'CRAWL ID':<{width}}  {'STATE':<9}  {'DONE':>7}  {'FAILED':>7}  {'QUEUED':>7}")
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:<9}  {row[2]:>7}  {row[3]:>7}  {row[4]:>7}")
    return 0


async def _list(args: argparse.Namespace) -> list[tuple[str, str, int, int, int]]:
    client = await connect(_redis_url(args), name="statecrawl:cli")
    try:
        rows = []
        for raw in sorted(await client.smembers(CRAWLS_KEY)):
            try:
                store = CrawlStore(client, raw.decode())
            except (ConfigError, UnicodeDecodeError):
                continue  # not a crawl id statecrawl wrote
            s = await store.status()
            rows.append((s["crawl_id"], s["state"], s["done"], s["failed"], s["queued"]))
        return rows
    finally:
        await client.aclose()


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
    p.add_argument("--crawl-id", metavar="ID", help="crawl id; an existing one is resumed (default: <host>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("worker", parents=common, help="join an existing crawl with one worker")
    p.add_argument("crawl_id")
    p.add_argument("--out", default="output", metavar="DIR", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", parents=common, help="show a crawl's counters")
    p.add_argument("crawl_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", parents=common, help="write a crawl's pages from Redis to files")
    p.add_argument("crawl_id")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cancel", parents=common, help="cancel a crawl; its workers exit")
    p.add_argument("crawl_id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("list", parents=common, help="list the crawls in this Redis")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("redis", parents=common, help="the embedded Redis: status or stop")
    p.add_argument("action", choices=("status", "stop"))
    p.set_defaults(func=cmd_redis)
    return parser


def _error(message: object) -> None:
    print(f"statecrawl: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
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
