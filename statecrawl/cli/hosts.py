"""``statecrawl hosts CRAWL_ID``: a polite crawl's budget per host, shown or changed.

::

    statecrawl hosts CRAWL_ID [--top N] [--json]               the busiest hosts
    statecrawl hosts CRAWL_ID --delay S [--concurrency N] [--host H]   change the budget

Without ``--host`` a change is the crawl's default; with it, that host's
override. Workers apply a change with their next lease (no restart). A crawl
that is not polite yet becomes polite (its next leases carry slots).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from statecrawl.cli.common import open_store
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.hosts import budget_store
from statecrawl.observe.snapshot import host_rows

__all__ = ["add_parser", "cmd_hosts", "host_rows"]


async def _hosts(args: argparse.Namespace) -> dict[str, Any]:
    async with open_store(args, args.crawl_id) as store:
        if args.delay is not None or args.concurrency is not None:
            budget = await budget_store(store, to_set=True)
            await budget.set_override((args.host or "*").lower(), delay=args.delay,
                                      concurrency=args.concurrency)
            await budget.make_polite()
        return await host_rows(store, args.top)


def cmd_hosts(args: argparse.Namespace) -> int:
    if args.host and args.delay is None and args.concurrency is None:
        raise ConfigError("--host needs --delay and/or --concurrency")
    if args.delay is not None and args.delay < 0:
        raise ConfigError("--delay must be 0 or more seconds")
    report = asyncio.run(_hosts(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"crawl {report['crawl_id']}: "
          + ("polite" if report["polite"] else "not polite (no budget set)")
          + f"; delay {report['delay']:g}s, at most {report['concurrency'] or 'any number of'} "
            f"requests per host in flight, AutoThrottle "
          + (f"target {report['autothrottle']:g}" if report["autothrottle"] else "off")
          + f"; {report['hosts']} hosts")
    if report["top"]:
        print(f"{'HOST':<40} {'QUEUED':>7} {'FLIGHT':>6} {'NEXT IN':>8} {'BACKOFF':>7}  DELAYS")
    for r in report["top"]:
        delays = ", ".join(f"{k} {v:g}s" for k, v in r["delay"].items()) or "-"
        print(f"{r['host'][:40]:<40} {r['queued']:>7} {r['in_flight']:>6} "
              f"{r['next_in']:>7.2f}s {r['backoff']:>7}  {delays}")
    return 0


def add_parser(sub: Any, common: list[argparse.ArgumentParser], count: Any) -> None:
    """The ``hosts`` sub-command, on *sub* (main.py's sub-parsers)."""
    p = sub.add_parser("hosts", parents=common,
                       help="a polite crawl's budget per host: show it, or change it while it runs")
    p.add_argument("crawl_id")
    p.add_argument("--top", type=count(1), default=20, metavar="N",
                   help="hosts shown, by queued requests (default: %(default)s)")
    p.add_argument("--delay", type=float, default=None, metavar="S",
                   help="set the least time between two requests of a host, fleet-wide (s)")
    p.add_argument("--concurrency", type=count(0), default=None, metavar="N",
                   help="set the most requests of a host in flight, fleet-wide (0: no cap)")
    p.add_argument("--host", default=None,
                   help="change this host's budget (default: the crawl's, for every host)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_hosts)
