"""``statecrawl serve``: the Firecrawl-compatible HTTP API, in N uvicorn processes.

The processes share nothing but Redis (:mod:`statecrawl.api.app`), so N is
only a matter of CPU, and more machines can serve the same Redis. uvicorn
starts them (its own ``workers=``); each builds its app with
:func:`app_from_env`, from environment variables this command sets before
starting uvicorn:

========================  ===========================================================
``STATECRAWL_REDIS_URL``  the Redis, resolved as every command does (``--redis-url``,
                          ``STATECRAWL_REDIS_URL`` / ``REDIS_URL``, else the embedded one)
``STATECRAWL_API_KEYS``   comma-separated keys (``--api-key`` options, else the variable)
``STATECRAWL_API_MAX_BODY``  bytes a request body may have (default 1 MiB)
``STATECRAWL_API_JOB_TTL``   seconds a job is kept after its last change
``STATECRAWL_API_SCRAPE_CRAWL``  the service crawl scrapes go to (default ``api-scrape``)
``STATECRAWL_API_RATE_LIMIT``   requests per minute per API key (``--rate-limit``; 0: none)
``STATECRAWL_API_CONCURRENCY``  requests in flight at once per API key (``--concurrency``; 0: none)
``STATECRAWL_FINISHED_TTL``  seconds after which finished crawls are purged (0: kept)
``STATECRAWL_METRICS_OPEN``  ``1``: ``/metrics`` needs no API key (``--metrics-open``)
``STATECRAWL_METRICS_MAX_CRAWLS``, ``STATECRAWL_METRICS_TOP_HOSTS``  what ``/metrics`` exports
========================  ===========================================================

Start-up checks, each a one-line error: Redis answers PING; the address can
be bound (a port in use is exit status 1, not a uvicorn traceback). SIGINT
or SIGTERM stops the processes cleanly, exit status 0.

``--scrape-workers N`` also starts N scrape workers (``statecrawl worker
--serve-scrapes``: ``scrapy crawl scrape`` on the same Redis), logging to
``<data dir>/logs/scrape-worker-<i>.log``, and stops them when the API
stops. ``--crawl-jobs N`` also starts ``statecrawl worker --jobs N`` (the
workers of crawl jobs, :mod:`statecrawl.cli.jobs`), logging to
``<data dir>/logs/job-workers.log``. Defaults: 1 scrape worker and 2 crawl
jobs on the embedded Redis (``statecrawl serve`` alone is a working local
API), none with a Redis URL (run the workers where you like).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from statecrawl.api import create_app, job_ttl, parse_api_keys, parse_max_body
from statecrawl.api.limits import parse_concurrency, parse_rate_limit
from statecrawl.api.metrics import metrics_open
from statecrawl.api.scrape import SCRAPE_SPIDER, scrape_crawl_id
from statecrawl.cli.common import check_bind, is_loopback, redis_url, say, uses_embedded
from statecrawl.cli.workers import KILL_AFTER, start_workers, worker_command, worker_env
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.connection import connect, redact_url, resolve_redis_url
from statecrawl.frontier.sweep import finished_ttl
from statecrawl.observe.metrics import MetricsLimits

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "add_parser", "app_from_env", "cmd_serve"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 3002  # 3002: Firecrawl self-host's port
_FACTORY = "statecrawl.cli.serve:app_from_env"


def _max_body(value: str | None) -> int:
    try:
        return parse_max_body(value)
    except ValueError:
        raise ConfigError(f"STATECRAWL_API_MAX_BODY={value!r}: give the most bytes a request body "
                          "may have, e.g. 1048576") from None


def app_from_env() -> Starlette:
    """The app of one API process, configured by the variables :func:`cmd_serve` sets."""
    env = os.environ
    url = resolve_redis_url({})  # STATECRAWL_REDIS_URL / REDIS_URL, else the embedded Redis
    return create_app(url, api_keys=parse_api_keys(env.get("STATECRAWL_API_KEYS")),
                      max_body=_max_body(env.get("STATECRAWL_API_MAX_BODY")),
                      job_ttl=job_ttl(env.get("STATECRAWL_API_JOB_TTL")),
                      rate_limit=parse_rate_limit(env.get("STATECRAWL_API_RATE_LIMIT")),
                      concurrency=parse_concurrency(env.get("STATECRAWL_API_CONCURRENCY")),
                      finished_ttl=finished_ttl(env.get("STATECRAWL_FINISHED_TTL")),
                      metrics_open=metrics_open(env))


async def _ping(url: str) -> None:
    client = await connect(url, name="statecrawl:serve")
    await client.aclose()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    keys = parse_api_keys(args.api_key) or parse_api_keys(os.environ.get("STATECRAWL_API_KEYS"))
    _max_body(os.environ.get("STATECRAWL_API_MAX_BODY"))
    job_ttl(os.environ.get("STATECRAWL_API_JOB_TTL"))
    finished_ttl(os.environ.get("STATECRAWL_FINISHED_TTL"))
    MetricsLimits.from_env(os.environ)  # a bad STATECRAWL_METRICS_* is a start-up error
    open_metrics = args.metrics_open or metrics_open(os.environ)
    rate = args.rate_limit if args.rate_limit is not None else parse_rate_limit(
        os.environ.get("STATECRAWL_API_RATE_LIMIT"))
    concurrency = args.concurrency if args.concurrency is not None else parse_concurrency(
        os.environ.get("STATECRAWL_API_CONCURRENCY"))
    url = redis_url(args)
    if not keys and not is_loopback(args.host):
        say(f"warning: listening on {args.host} without API keys: anyone who reaches this port "
            "can read and cancel every job; set --api-key or STATECRAWL_API_KEYS")
    asyncio.run(_ping(url))
    check_bind(args.host, args.port, option="--host",
               hint="stop what holds it or choose another port with --port")
    embedded = uses_embedded(args)  # (before our own STATECRAWL_REDIS_URL below)
    scrapers = args.scrape_workers if args.scrape_workers is not None else int(embedded)
    jobs = args.crawl_jobs if args.crawl_jobs is not None else 2 * int(embedded)
    os.environ["STATECRAWL_REDIS_URL"] = url  # read by app_from_env in every API process
    os.environ["STATECRAWL_API_KEYS"] = ",".join(keys)
    os.environ["STATECRAWL_API_RATE_LIMIT"] = str(rate)
    os.environ["STATECRAWL_API_CONCURRENCY"] = str(concurrency)
    os.environ["STATECRAWL_METRICS_OPEN"] = "1" if open_metrics else "0"
    shown = f"[{args.host}]" if ":" in args.host else args.host
    say(f"API listening on http://{shown}:{args.port} ({args.workers} process"
        f"{'es' if args.workers > 1 else ''}, Redis {redact_url(url)}, "
        f"{'API keys required' if keys else 'no API keys'}"
        f"{'; /metrics open without a key' if keys and open_metrics else ''}); scrape, map and batch scrape are "
        "served by scrape workers (statecrawl worker --serve-scrapes), crawls by job workers "
        "(statecrawl worker --jobs N)")
    if rate or concurrency:
        say(f"limits per {'API key' if keys else 'client address'}, for every API process on this "
            f"Redis: {f'{rate} requests/min' if rate else 'no rate limit'}, "
            f"{f'{concurrency} in flight' if concurrency else 'no concurrency limit'}")
    stopped: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # uvicorn re-raises the signal it stopped on once it is done; this handler takes it,
        # so a clean stop exits 0 instead of dying of it
        previous[sig] = signal.signal(sig, lambda signum, frame: stopped.append(signum))
    workers = _start_scrape_workers(url, Path(args.data_dir), scrapers)
    workers += _start_job_supervisor(url, Path(args.data_dir), jobs)
    try:
        uvicorn.run(_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=10,
                    server_header=False)
    except SystemExit as exc:  # uvicorn's own start-up failure
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    finally:
        _stop(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("API stopped")
    return 0


def _start_scrape_workers(url: str, data_dir: Path, count: int) -> list[subprocess.Popen[bytes]]:
    if not count:
        return []
    crawl_id = scrape_crawl_id()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    paths = [logs / f"scrape-worker-{i}.log" for i in range(1, count + 1)]
    env = worker_env(url, data_dir / "scrape-output")
    env.pop("STATECRAWL_API_KEYS", None)  # the API's, not the workers'
    env["STATECRAWL_NET_GUARD"] = "true"  # API users' URLs: no loopback, private or metadata address
    procs = start_workers(worker_command(SCRAPE_SPIDER, crawl_id, {}), env, paths)
    say(f"{count} scrape worker{'s' if count > 1 else ''} serving crawl {crawl_id} "
        f"(logs: {logs}/scrape-worker-*.log)")
    return procs


def _start_job_supervisor(url: str, data_dir: Path, slots: int) -> list[subprocess.Popen[bytes]]:
    """``statecrawl worker --jobs <slots>`` on the same Redis (none for 0 slots)."""
    if not slots:
        return []
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = worker_env(url, data_dir / "job-output")
    env.pop("STATECRAWL_API_KEYS", None)
    cmd = [sys.executable, "-m", "statecrawl.cli", "worker", "--jobs", str(slots),
           "--out", str(data_dir / "job-output")]
    procs = start_workers(cmd, env, [logs / "job-workers.log"])
    say(f"crawl jobs served, {slots} at once (log: {logs}/job-workers.log)")
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (the workers give their leases back), then SIGKILL after KILL_AFTER s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(KILL_AFTER)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def add_parser(sub: Any, common: list[argparse.ArgumentParser], count: Any) -> None:
    """The ``serve`` sub-command, on *sub* (main.py's sub-parsers)."""
    p = sub.add_parser("serve", parents=common, help="serve the Firecrawl-compatible HTTP API")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=count(1), default=DEFAULT_PORT, metavar="PORT",
                   help="TCP port (default: %(default)s)")
    p.add_argument("--workers", type=count(1), default=1, metavar="N",
                   help="API processes (default: 1); they share nothing but Redis")
    p.add_argument("--api-key", action="append", metavar="KEY",
                   help="accept this Bearer key (repeatable; default: $STATECRAWL_API_KEYS, "
                        "comma-separated; none: the API is open)")
    p.add_argument("--rate-limit", type=count(0), default=None, metavar="N",
                   help="requests per minute per API key (per client address without keys), "
                        "for all API processes on this Redis together; 429 past it (default: "
                        "$STATECRAWL_API_RATE_LIMIT, else 0: no limit)")
    p.add_argument("--concurrency", type=count(0), default=None, metavar="N",
                   help="requests in flight at once per API key (per client address without "
                        "keys), for all API processes on this Redis together; 429 past it "
                        "(default: $STATECRAWL_API_CONCURRENCY, else 0: no limit)")
    p.add_argument("--scrape-workers", type=count(0), default=None, metavar="N",
                   help="also run N scrape workers (POST /scrape) on this Redis, stopped with "
                        "the API (default: 1 on the embedded Redis, else 0)")
    p.add_argument("--crawl-jobs", type=count(0), default=None, metavar="N",
                   help="also run the workers of up to N crawl jobs at once (statecrawl worker "
                        "--jobs N), stopped with the API (default: 2 on the embedded Redis, else 0)")
    p.add_argument("--metrics-open", action="store_true",
                   help="answer GET /metrics without an API key even when keys are set "
                        "(default: $STATECRAWL_METRICS_OPEN, else a key is needed)")
    p.set_defaults(func=cmd_serve)
