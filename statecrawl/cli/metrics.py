"""``statecrawl metrics``: a standalone Prometheus exporter of the crawls in one Redis.

::

    statecrawl metrics [--listen 127.0.0.1:9108] [--api-key KEY] [--max-crawls N] [--top-hosts N]
    statecrawl metrics --once         print the metrics once to stdout and exit (cron, debugging)

The same text as ``GET /metrics`` on ``statecrawl serve`` (:mod:`statecrawl.observe.metrics`),
for a fleet that runs no API, or to scrape Redis from the monitoring network only. It
listens on 127.0.0.1 unless told otherwise (``--listen 0.0.0.0:9108``: a warning without
``--api-key``), answers ``/metrics`` alone, one uvicorn process. Redis is PINGed at
start (an unreachable Redis is exit status 1 there); afterwards a scrape while Redis is
down answers 503. SIGINT or SIGTERM stops it, exit status 0. 9108 is free in Prometheus' default port allocations list.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from statecrawl.api import parse_api_keys
from statecrawl.api.metrics import metrics_app
from statecrawl.cli.common import check_bind, is_loopback, redis_url, say
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.connection import connect, redact_url
from statecrawl.observe.metrics import MetricsLimits, exposition

__all__ = ["DEFAULT_LISTEN", "add_parser", "cmd_metrics", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:9108"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1) -> (host, port)."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", value
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a bare IPv6 address: the port cannot be told apart
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, [IPv6]:PORT or PORT with a "
                          "port from 1 to 65535, e.g. 127.0.0.1:9108")
    return host, int(port_text)


def _limits(args: argparse.Namespace) -> MetricsLimits:
    env = MetricsLimits.from_env(os.environ)
    return MetricsLimits(env.max_crawls if args.max_crawls is None else args.max_crawls,
                         env.top_hosts if args.top_hosts is None else args.top_hosts)


async def _once(url: str, limits: MetricsLimits) -> bytes:
    client = await connect(url, name="statecrawl:metrics")
    try:
        return await exposition(client, limits)
    finally:
        await client.aclose()


async def _ping(url: str) -> None:
    client = await connect(url, name="statecrawl:metrics")
    await client.aclose()


def cmd_metrics(args: argparse.Namespace) -> int:
    limits = _limits(args)
    url = redis_url(args)
    if args.once:
        if args.listen is not None:
            raise ConfigError("--once prints the metrics and exits: give no --listen")
        sys.stdout.write(asyncio.run(_once(url, limits)).decode())
        sys.stdout.flush()
        return 0
    import uvicorn

    host, port = parse_listen(args.listen or DEFAULT_LISTEN)
    keys = parse_api_keys(args.api_key)
    if not keys and not is_loopback(host):
        say(f"warning: metrics on {host} without --api-key: anyone who reaches this port reads "
            "the crawl ids, hosts and workers of this Redis")
    asyncio.run(_ping(url))
    check_bind(host, port, option="--listen", hint="choose another address with --listen")
    shown = f"[{host}]" if ":" in host else host
    say(f"metrics on http://{shown}:{port}/metrics (Redis {redact_url(url)}, at most "
        f"{limits.max_crawls} crawls and {limits.top_hosts} hosts each"
        f"{', API key required' if keys else ''})")
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn re-raises the signal it stopped on once it is done; this handler takes
        # it, so a clean stop exits 0 instead of dying of it
        previous[sig] = signal.signal(sig, lambda signum, frame: None)
    try:
        uvicorn.run(metrics_app(url, limits, api_keys=keys), host=host, port=port,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                    server_header=False)
    except SystemExit as exc:  # uvicorn's own start-up failure
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("metrics stopped")
    return 0


def add_parser(sub: Any, common: list[argparse.ArgumentParser], count: Any) -> None:
    """The ``metrics`` sub-command, on *sub* (main.py's sub-parsers)."""
    p = sub.add_parser("metrics", parents=common,
                       help="serve (or print, --once) Prometheus metrics of this Redis' crawls")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help=f"address to serve /metrics on (default: {DEFAULT_LISTEN})")
    p.add_argument("--once", action="store_true",
                   help="print the metrics once to stdout and exit")
    p.add_argument("--api-key", action="append", metavar="KEY",
                   help="require this Bearer key on /metrics (repeatable, or comma-separated)")
    p.add_argument("--max-crawls", type=count(0), metavar="N",
                   help="export at most N crawls (default: $STATECRAWL_METRICS_MAX_CRAWLS, else 50)")
    p.add_argument("--top-hosts", type=count(0), metavar="N",
                   help="per crawl, at most N hosts (default: $STATECRAWL_METRICS_TOP_HOSTS, else 10)")
    p.set_defaults(func=cmd_metrics)
