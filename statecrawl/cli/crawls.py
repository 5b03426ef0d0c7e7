"""``statecrawl list`` and ``statecrawl purge``: the crawls in a Redis, and removing them.

::

    statecrawl list [--json] [--no-bytes]                 crawls, their state, counts and Redis bytes
    statecrawl purge CRAWL_ID [--dry-run] [--force] [--wait S]   remove every key of a crawl
    statecrawl purge --finished-before DURATION [--dry-run]       every crawl finished that long ago

How a purge works, and the ``STATECRAWL_FINISHED_TTL`` sweep that ``list``
runs first: :mod:`statecrawl.frontier.lifecycle`. Exit status of ``purge``:
0 when everything went (or, with ``--dry-run``, would go); 1 for an unknown
crawl, a running one without ``--force`` (nothing is deleted), or keys still
there at the end (a worker wrote them back, or the crawl was created again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from typing import Any

from redis.exceptions import ResponseError

from statecrawl.cli.common import redis_url, say
from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.frontier.connection import connect
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.lifecycle import PurgeResult, crawl_bytes, purge_crawl, sweep_finished
from statecrawl.frontier.sweep import finished_ttl
from statecrawl.frontier.store import CrawlStore

__all__ = ["add_parsers", "cmd_list", "cmd_purge", "human_bytes", "parse_duration", "shown_state"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 12h or 7d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def shown_state(status: dict[str, Any]) -> str:
    """The state to show: ``interrupted`` for a ``running`` crawl that no live worker serves."""
    if status["state"] == "running" and not status["workers"]:
        return "interrupted"
    return str(status["state"])


def _env_ttl() -> float:
    return finished_ttl(os.environ.get("STATECRAWL_FINISHED_TTL"))


# -- list --------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    rows, complete = asyncio.run(_list(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no crawls")
        return 0
    width = max(len("CRAWL ID"), *(len(r["crawl_id"]) for r in rows))
    print(f"{'CRAWL ID':<{width}}  {'STATE':<11}  {'DONE':>7}  {'FAILED':>7}  {'QUEUED':>7}"
          f"{'' if args.no_bytes else '  ' + format('BYTES', '>11')}")
    for r in rows:
        size = "" if args.no_bytes else "  " + format(
            human_bytes(r["bytes"]) + ("" if complete else "+"), ">11")
        print(f"{r['crawl_id']:<{width}}  {r['state']:<11}  {r['done']:>7}  {r['failed']:>7}  "
              f"{r['queued']:>7}{size}")
    if not complete:
        say("Redis holds more keys than one list measures: BYTES with + are lower bounds")
    return 0


async def _list(args: argparse.Namespace) -> tuple[list[dict[str, Any]], bool]:
    ttl = _env_ttl()
    client = await connect(redis_url(args), name="statecrawl:cli")
    try:
        if ttl:
            purged = await sweep_finished(client, ttl)
            if purged:
                say(f"purged {len(purged)} crawl{'' if len(purged) == 1 else 's'} finished more "
                    f"than {ttl:g} s ago (STATECRAWL_FINISHED_TTL): "
                    f"{', '.join(r.crawl_id for r in purged)}")
        listed = set(await client.smembers(CRAWLS_KEY))
        sizes, complete = ({}, True) if args.no_bytes else await crawl_bytes(client)
        for cid in sorted(sizes):  # its meta written, its index entry not (a crash between)
            if cid.encode() not in listed and _meta_key(cid) and await client.exists(_meta_key(cid)):
                await client.sadd(CRAWLS_KEY, cid)
                listed.add(cid.encode())
        rows = []
        for raw in sorted(listed):
            try:
                store = CrawlStore(client, raw.decode())
            except (ConfigError, UnicodeDecodeError):
                continue  # not a crawl id statecrawl wrote
            if not await store.exists():  # expired with its API job (or deleted): gone
                await client.srem(CRAWLS_KEY, raw)
                continue
            row: dict[str, Any] = {"crawl_id": store.crawl_id, "state": "broken", "done": 0,
                                   "failed": 0, "queued": 0}
            try:
                s = await store.status()
            except (ResponseError, ValueError, UnicodeDecodeError):
                pass  # one broken crawl (a key of the wrong type, bad meta) must not hide the others
            else:
                row.update(state=shown_state(s), done=s["done"], failed=s["failed"], queued=s["queued"])
            rows.append(row)
        if rows and not args.no_bytes:
            for row in rows:
                row["bytes"] = sizes.get(row["crawl_id"], 0)
                row["bytes_complete"] = complete
        return rows, complete
    finally:
        await client.aclose()


def _meta_key(crawl_id: str) -> str:
    """The meta key of *crawl_id*, '' if it is not a crawl id (a key statecrawl did not write)."""
    try:
        return CrawlKeys(crawl_id).meta
    except ConfigError:
        return ""


# -- purge -------------------------------------------------------------------------------


def cmd_purge(args: argparse.Namespace) -> int:
    if (args.crawl_id is None) == (args.finished_before is None):
        raise ConfigError("give a crawl id, or --finished-before DURATION (not both)")
    if args.finished_before is not None:
        if args.force:
            raise ConfigError("--force is for one crawl id; --finished-before purges only finished crawls")
        return _purge_finished(args)
    result = asyncio.run(_purge_one(args))
    name = f"crawl {result.crawl_id}" + (f" ({result.state})" if result.state else "")
    if result.dry_run:
        print(f"would purge {name}: {result.keys} keys, {human_bytes(result.bytes)} "
              f"({result.bytes} bytes)")
        for key in result.samples:
            print(f"  {key}")
        if result.keys > len(result.samples):
            print(f"  ... and {result.keys - len(result.samples)} more")
        for index in result.indexes:
            print(f"  and its entry in {index}")
        if result.refused and not args.force:
            why = (f"{result.live_workers} live worker{'' if result.live_workers == 1 else 's'}"
                   if result.live_workers else "a running API job")
            say(f"error: it has {why}: a purge would be refused without --force")
            return 1
        return 0
    print(f"purged {name}: {result.keys} keys, {human_bytes(result.bytes)} freed "
          f"({result.bytes} bytes)")
    if result.live_workers:
        print(f"{result.live_workers} live worker{'' if result.live_workers == 1 else 's'} "
              "lost the crawl: each stops at its next lease or commit (close reason state_lost)")
    if result.recreated:
        raise StatecrawlError(f"crawl {result.crawl_id!r} was created again while it was purged "
                              f"(a worker started with its id); the new crawl's "
                              f"{result.left} keys were left alone")
    if result.left:
        raise StatecrawlError(f"{result.left} keys of crawl {result.crawl_id!r} are still in Redis "
                              "(written by a worker that has not stopped yet?): run the purge again")
    return 0


async def _purge_one(args: argparse.Namespace) -> PurgeResult:
    client = await connect(redis_url(args), name="statecrawl:cli")
    try:
        return await purge_crawl(client, args.crawl_id, force=args.force, dry_run=args.dry_run,
                                 wait=args.wait)
    finally:
        await client.aclose()


def _purge_finished(args: argparse.Namespace) -> int:
    results = asyncio.run(_sweep(args))
    verb = "would purge" if args.dry_run else "purged"
    for r in results:
        print(f"{verb} crawl {r.crawl_id}: {r.keys} keys, {human_bytes(r.bytes)}")
    total = sum(r.bytes for r in results)
    print(f"{verb} {len(results)} crawl{'' if len(results) == 1 else 's'} finished before "
          f"{args.finished_before:g} s ago: {sum(r.keys for r in results)} keys, "
          f"{human_bytes(total)} ({total} bytes)")
    return 0


async def _sweep(args: argparse.Namespace) -> list[PurgeResult]:
    client = await connect(redis_url(args), name="statecrawl:cli")
    try:
        return await sweep_finished(client, args.finished_before, dry_run=args.dry_run)
    finally:
        await client.aclose()


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", parents=common, help="list the crawls in this Redis")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-bytes", action="store_true",
                   help="skip measuring each crawl's Redis memory (one SCAN of the keyspace)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("purge", parents=common,
                       help="remove every key of a crawl from Redis (or of every crawl finished "
                            "before a time)")
    p.add_argument("crawl_id", nargs="?", help="the crawl to remove")
    p.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    p.add_argument("--force", action="store_true",
                   help="purge even a running crawl: its workers stop with state_lost")
    p.add_argument("--wait", type=float, default=15.0, metavar="S",
                   help="with --force: wait at most this long for live workers to stop before "
                        "the last sweep (default: %(default)s)")
    p.add_argument("--finished-before", type=parse_duration, metavar="DURATION",
                   help="purge every crawl finished at least this long ago (90s, 30m, 12h, 7d)")
    p.set_defaults(func=cmd_purge)
