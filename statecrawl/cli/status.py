"""``statecrawl status CRAWL_ID``: one crawl's facts in the terminal, once or refreshed.

::

    statecrawl status CRAWL_ID [--json] [--top N] [--watch [S]]

The facts are :func:`statecrawl.observe.crawl_snapshot`'s: the counters, a
progress bar when the crawl has a ``limit``, pages/s over the last 1, 5 and 15
minutes, the last minute's status-code mix and errors, the live workers with
their heartbeat age, the leases they hold and the age of the oldest, the top
hosts (by backlog in a polite crawl, else by fetches) with their rate and
budget, and the newest dead letters. ``--watch`` redraws every S seconds (2 by
default) until the crawl ends or Ctrl-C; it exits 0 then, like one read.

``--json`` keeps the fields of earlier versions (``workers`` is still the
number of live workers) and adds ``progress``, ``rates``, ``last_minute``,
``live_workers``, ``hosts``, ``politeness``, ``leases``, ``dupefilter`` and
``redis``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from statecrawl.cli.common import one_line, open_store
from statecrawl.cli.crawls import human_bytes, shown_state
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.lifecycle import crawl_bytes
from statecrawl.observe import crawl_snapshot

__all__ = ["add_parser", "cmd_status", "gather", "render"]

#: Dead letters shown.
DEAD_LETTERS_SHOWN = 5
#: Scalar fields shown as ``name value`` lines, in this order.
SCALARS = ("crawl_id", "state", "queued", "in_flight", "done", "failed", "seen", "workers",
           "start_url", "spider", "limit", "created_at", "finished_at", "forgotten",
           "quarantined", "redis_bytes", "pages_per_s")
ENDED = ("finished", "cancelled")
BAR = 30


async def gather(args: argparse.Namespace) -> dict[str, Any]:
    """The crawl's status (module docstring), read in one connection."""
    async with open_store(args, args.crawl_id) as store:
        snap = await crawl_snapshot(store, top=args.top, dead=DEAD_LETTERS_SHOWN)
        sizes, _ = await crawl_bytes(store.client, store.crawl_id)
    live = snap.pop("workers")
    snap.pop("series")  # the live page's chart; too long for a terminal
    stats = snap.pop("stats")
    status: dict[str, Any] = {name: snap.pop(name, None) for name in SCALARS[:-3]}
    status["workers"] = len(live)
    status["state"] = shown_state(status)
    status["quarantined"] = int(stats.get("quarantined", 0))
    status["redis_bytes"] = sizes.get(store.crawl_id, 0)  # MEMORY USAGE over its keys
    status["pages_per_s"] = snap["rates"]["pages_per_s"]
    status["live_workers"] = live
    status.update(snap)
    status["dead_letters"] = status.pop("dead_letters")  # newest first
    status["stats"] = stats
    return status


def _scalar(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in ("created_at", "finished_at"):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    if name == "redis_bytes":
        return f"{human_bytes(value)} ({value})"
    if name == "pages_per_s":
        return "  ".join(f"{window} {rate:.2f}" for window, rate in value.items())
    return str(value)


def _bar(status: dict[str, Any]) -> str:
    share = float(status["progress"])
    filled = round(share * BAR)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {share * 100:5.1f}% of {status['limit']} requests"


def _minute(minute: dict[str, Any]) -> str:
    parts = [f"{kind} {n}" for kind, n in minute["status"].items()] or ["no responses"]
    errors = sum(minute["errors"].values())
    if errors:
        named = ", ".join(f"{one_line(k, 40)} {v}" for k, v in
                          sorted(minute["errors"].items(), key=lambda kv: -kv[1])[:3])
        parts.append(f"errors {errors} ({named})")
    if minute["callback_errors"]:
        parts.append(f"callback errors {sum(minute['callback_errors'].values())}")
    parts.append(human_bytes(minute["bytes"]))
    return "  ".join(parts)


def _age(seconds: Any) -> str:
    return "-" if not isinstance(seconds, (int, float)) else f"{seconds:.1f}s"


def render(status: dict[str, Any]) -> list[str]:
    """The text of one status read."""
    width = 18
    lines = [f"{name:<{width}} {_scalar(name, status[name])}" for name in SCALARS]
    if status.get("progress") is not None:
        lines.append(f"{'progress':<{width}} {_bar(status)}")
    lines.append(f"{'last_minute':<{width}} {_minute(status['last_minute'])}")
    leases = status["leases"]
    lines.append(f"{'leases':<{width}} {leases['in_flight']} in flight, oldest "
                 f"{_age(leases['oldest_age'])}, {leases['reclaimed']} reclaimed so far")
    if status["live_workers"]:
        lines += ["", f"{'WORKER':<44} {'HEARTBEAT':>9} {'LEASES':>6} {'OLDEST':>7}  HOST/PID"]
        for w in status["live_workers"]:
            where = f"{one_line(w.get('host', '-'), 30)}/{w.get('pid', '-')}"
            lines.append(f"{one_line(w['id'], 44):<44} {_age(w['heartbeat_age']):>9} "
                         f"{w['leases']:>6} {_age(w.get('oldest_lease_s')):>7}  {where}")
    if status["hosts"]:
        polite = status["politeness"]["polite"]
        lines += ["", f"{'HOST':<40} {'QUEUED':>7} {'FLIGHT':>6} {'FETCH/s':>7} {'ERR/1m':>6}"
                  + ("  DELAY  BACKOFF" if polite else "")]
        for h in status["hosts"]:
            row = (f"{one_line(h['host'], 40):<40} {h.get('queued', '-'):>7} "
                   f"{h.get('in_flight', '-'):>6} {h['rate']:>7.2f} {h['errors_1m']:>6}")
            if polite:
                delay = max(h["delay"].values(), default=status["politeness"]["delay"])
                row += f"  {delay:>4g}s  {h['backoff']:>7}"
            lines.append(row)
        lines.append("")
    for letter in status["dead_letters"]:
        lines.append(f"{'dead_letter':<{width}} {one_line(letter.get('kind', '?'), 20)} "
                     f"{one_line(letter.get('ref', '-'), 120)}: {one_line(letter.get('error', ''))}")
    lines += [f"{'stats.' + name:<{width}} {value}" for name, value in sorted(status["stats"].items())]
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is None:
        status = asyncio.run(gather(args))
        print(json.dumps(status, indent=2) if args.json else "\n".join(render(status)))
        return 0
    if args.watch <= 0:
        raise ConfigError("--watch takes a number of seconds > 0")
    clear = sys.stdout.isatty() and not args.json
    try:
        while True:
            started = time.monotonic()
            status = asyncio.run(gather(args))
            text = json.dumps(status) if args.json else "\n".join(render(status))
            print(("\x1b[H\x1b[2J" if clear else "") + text, flush=True)
            if status["state"] in ENDED:
                return 0
            if not clear and not args.json:
                print(flush=True)  # frames apart when piped
            time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


def add_parser(sub: Any, common: list[argparse.ArgumentParser], count: Any) -> None:
    """The ``status`` sub-command, on *sub* (main.py's sub-parsers)."""
    p = sub.add_parser("status", parents=common,
                       help="show a crawl: counters, rates, workers, top hosts, errors")
    p.add_argument("crawl_id")
    p.add_argument("--json", action="store_true",
                   help="print JSON (with --watch: one JSON document per line)")
    p.add_argument("--top", type=count(1), default=10, metavar="N",
                   help="hosts shown (default: %(default)s)")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="S",
                   help="redraw every S seconds (default 2) until the crawl ends or Ctrl-C")
    p.set_defaults(func=cmd_status)
