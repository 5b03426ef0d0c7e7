"""``statecrawl crawl``: start or resume a crawl, supervise its workers, report the truth.

Starting: the crawl is created in Redis by the command (so its epoch is
known and passed to every worker), after a resume's options are compared
with the recorded ones (any difference but ``--limit`` is refused). While it
runs: a progress line, signals passed on to the workers (SIGHUP like
SIGTERM), and the embedded Redis restarted from its AOF if it dies. At the
end: one summary line with the failed pages grouped by error type, and exit
status 1 when the crawl did not finish, no page succeeded, entries were
quarantined, a worker failed, or Redis lost the crawl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from statecrawl.cli.common import error as _error
from statecrawl.cli.common import one_line as _one_line
from statecrawl.cli.common import open_store, redis_url, say, uses_embedded
from statecrawl.cli.progress import (
    PollErrorHandler,
    Progress,
    format_duration,
    supervise,
)
from statecrawl.cli.workers import log_tail, start_workers, worker_command, worker_env
from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.frontier.connection import DEFAULT_DATA_DIR
from statecrawl.frontier.embedded import restart_embedded_redis
from statecrawl.frontier.item_codec import load_item
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier.scope import Scope, validate_start_url
from statecrawl.frontier.serialize import dumps, loads
from statecrawl.frontier.store import CrawlStore
from statecrawl.output.export import crawl_sink

__all__ = ["SPIDER", "cmd_crawl", "default_crawl_id"]

SPIDER = "site"
#: Keys of the crawl's ``failed`` set sampled for the error summary.
FAILED_SAMPLE = 1000
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
#: Spider arguments the ``crawl`` command sets, and the options that set them.
_OPTIONS = {"url": "URL", "limit": "--limit", "max_depth": "--max-depth", "include": "--include",
            "exclude": "--exclude", "allow_subdomains": "--allow-subdomains", "render": "--render",
            "delay": "--delay", "host_concurrency": "--host-concurrency"}


def default_crawl_id(url: str, now: datetime | None = None) -> str:
    """``<host>-<YYYYmmdd-HHMMSS>`` (local time), reduced to the characters a crawl id allows."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    host = _UNSAFE_ID.sub("-", urlsplit(url).hostname or "crawl").strip("-.") or "crawl"
    return f"{host[: 64 - len(stamp) - 1]}-{stamp}"


def cmd_crawl(args: argparse.Namespace) -> int:
    start_url = validate_start_url(args.url)
    Scope(start_url, allow_subdomains=args.allow_subdomains, include=args.include, exclude=args.exclude)
    crawl_id = validate_crawl_id(args.crawl_id) if args.crawl_id else default_crawl_id(start_url)
    spider_args = {
        "url": start_url, "limit": args.limit, "max_depth": args.max_depth, "include": args.include,
        "exclude": args.exclude, "allow_subdomains": args.allow_subdomains, "render": args.render,
        "delay": args.delay, "host_concurrency": args.host_concurrency,
    }
    cmd = worker_command(SPIDER, crawl_id, spider_args)  # refuses what cannot go on a command line
    out = Path(args.out).resolve()
    return asyncio.run(_crawl(args, crawl_id, spider_args, cmd, out, out / "logs"))


def _resume_command(spider_args: dict[str, Any], crawl_id: str, args: argparse.Namespace) -> str:
    """The ``statecrawl crawl`` command line that resumes this crawl with the same options."""
    argv = ["statecrawl", "crawl", str(spider_args["url"]), "--crawl-id", crawl_id]
    for name, option in _OPTIONS.items():
        value = spider_args.get(name)
        if name == "url" or value is None or value is False:
            continue
        argv += [option] if value is True else [option, str(value)]
    if uses_embedded(args) and args.data_dir != DEFAULT_DATA_DIR:
        argv += ["--data-dir", str(args.data_dir)]
    return shlex.join(argv)


def _canonical_args(spider_args: dict[str, Any], crawl_id: str) -> dict[str, Any]:
    """The arguments as the ``site`` spider records them (``crawl_args``), JSON round-tripped."""
    from statecrawl.spiders.site import (
        SiteSpider,  # imports Scrapy: only when a crawl is resumed
    )

    spider = SiteSpider(**spider_args, crawl_id=crawl_id)
    return dict(loads(dumps(spider.crawl_args, "spider arguments"), "spider arguments"))


def _option_value(value: Any) -> str:
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


async def _reconcile_options(store: CrawlStore, crawl_id: str, spider_args: dict[str, Any]) -> str | None:
    """Compare the options of a resumed crawl with the recorded ones.

    Any difference but ``--limit`` is a :class:`ConfigError` listing each
    option (recorded vs given). A new limit is recorded (the meta's ``limit``
    and the ``limit`` inside ``args``, so ``statecrawl worker`` picks it up
    too); returns the line announcing it, or ``None``.
    """
    raw = await store.client.hget(store.keys.meta, "args")
    if raw is None:
        return None  # no worker recorded them yet: nothing to compare with
    try:
        recorded = loads(raw, "spider arguments")
    except StatecrawlError as exc:
        raise StatecrawlError(f"crawl {crawl_id!r}: its recorded options are unreadable ({exc}); "
                              "use another --crawl-id") from None
    if not isinstance(recorded, dict):
        raise StatecrawlError(f"crawl {crawl_id!r}: its recorded options are not a JSON object; "
                              "use another --crawl-id")
    given = _canonical_args(spider_args, crawl_id)
    differences = [
        f"{_OPTIONS.get(name, '-a ' + name)}: recorded {_option_value(recorded.get(name))}, "
        f"given {_option_value(given.get(name))}"
        for name in sorted(set(recorded) | set(given))
        if name != "limit" and recorded.get(name) != given.get(name)
    ]
    if differences:
        raise ConfigError(
            f"crawl {crawl_id!r} was started with other options; resume it with the same ones "
            f"(or use another --crawl-id): {'; '.join(differences)}"
        )
    old, new = recorded.get("limit"), given.get("limit")
    if old == new:
        return None
    if bool(old) != bool(new) and int(await store.client.hget(store.keys.meta, "shards") or 1) > 1:
        raise ConfigError(f"crawl {crawl_id!r} is spread over shards: it keeps the page limit it "
                          f"was created with ({_option_value(old)}); a limit can change, not "
                          "appear or go")
    if new is None:
        recorded.pop("limit", None)
    else:
        recorded["limit"] = new
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.hset(store.keys.meta, mapping={"limit": int(new or 0),
                                            "args": dumps(recorded, "spider arguments")})
        await pipe.execute()
    return f"limit changed from {_option_value(old)} to {_option_value(new)}"


def _embedded_keeper(data_dir: str, progress: Progress) -> PollErrorHandler:
    """What ``crawl`` does when a status poll fails on the embedded Redis: restart it if it died."""

    async def on_poll_error(exc: BaseException) -> None:
        try:
            pid = await asyncio.to_thread(restart_embedded_redis, data_dir)
        except (StatecrawlError, OSError) as err:
            progress.close()
            _error(f"the embedded Redis (data dir {data_dir}) died and could not be restarted; "
                   "stopping the workers")
            raise StatecrawlError(
                f"the embedded Redis (data dir {data_dir}) died and could not be restarted: {err}"
            ) from err
        if pid is not None:
            progress.close()
            say(f"the embedded Redis died ({exc}); restarted it from its append-only file (AOF), "
                 f"pid {pid}")

    return on_poll_error


async def _crawl(
    args: argparse.Namespace, crawl_id: str, spider_args: dict[str, Any], cmd: list[str],
    out: Path, logs: Path,
) -> int:
    url = redis_url(args)
    resume = _resume_command(spider_args, crawl_id, args)
    async with open_store(args, crawl_id, must_exist=False, url=url) as store:
        # Fail fast while supervising: a failed poll is looked into, not waited out.
        store.client.set_retry(AsyncRetry(NoBackoff(), 1))
        before = await store.status()
        if before["state"] == "cancelled":
            raise StatecrawlError(f"crawl {crawl_id!r} was cancelled; start a new one with another --crawl-id")
        if before["start_url"] and before["start_url"] != spider_args["url"]:
            raise ConfigError(
                f"crawl {crawl_id!r} crawls {before['start_url']}, not {spider_args['url']}; "
                "use another --crawl-id"
            )
        limit_note = None
        if before["state"] != "unknown":
            limit_note = await _reconcile_options(store, crawl_id, spider_args)
        print(f"crawl id: {crawl_id} (resume with --crawl-id {crawl_id})", flush=True)
        if before["state"] != "unknown":
            print(f"resuming: {before['done']} pages done, {before['queued']} queued", flush=True)
        if limit_note:
            print(limit_note, flush=True)
        logs.mkdir(parents=True, exist_ok=True)  # only now: a refused resume writes nothing
        # The crawl is made here, not by its first worker, so its epoch is known: a
        # worker that starts after Redis lost the crawl refuses to make it again.
        await store.open_crawl(spider=SPIDER, start_url=spider_args["url"],
                               limit=spider_args["limit"],
                               args=_canonical_args(spider_args, crawl_id))
        epoch = store.epoch
        env = worker_env(url, out, epoch)
        log_paths = [logs / f"worker-{i}.log" for i in range(1, args.workers + 1)]
        procs: list[subprocess.Popen[bytes]] = []

        def start() -> list[subprocess.Popen[bytes]]:
            procs.extend(start_workers(cmd, env, log_paths))
            return procs

        started = time.monotonic()
        progress = Progress(sys.stderr, enabled=not args.quiet)
        keeper = _embedded_keeper(args.data_dir, progress) if uses_embedded(args) else None
        try:
            signum = await supervise(start, store.status, progress, on_poll_error=keeper, notice=say)
        except StatecrawlError:
            print(f"interrupted: workers stopped; resume with: {resume}", file=sys.stderr, flush=True)
            raise
        elapsed = time.monotonic() - started
        final = await store.status()
        found = await store.client.hget(store.keys.meta, "epoch")
        lost = found is None or found.decode(errors="replace") != epoch
        failures = await _failure_summary(store, final["failed"]) if final["failed"] else ""
    if signum is not None:
        print(f"interrupted: workers stopped after {final['done']} pages; resume with: {resume}",
              file=sys.stderr, flush=True)
        return 128 + signum
    done, failed = final["done"], final["failed"]
    new = done - before["done"]
    state = "lost" if lost else final["state"] if final["state"] != "unknown" else "not started"
    print(f"crawl {crawl_id} {state}: {done} page{'' if done == 1 else 's'}, {failed} failed"
          f"{f' ({failures})' if failures else ''} in {format_duration(elapsed)}, "
          f"{new / elapsed if elapsed else 0:.1f} pages/s")
    print(f"output: {out} (Markdown in markdown/, JSON Lines in pages-{crawl_id}-*.jsonl, logs in logs/)")
    broken = [(i, p.returncode, path) for i, (p, path) in enumerate(zip(procs, log_paths), 1) if p.returncode]
    for i, code, path in broken:
        _error(f"worker {i} exited with status {code}; read {path}\n{log_tail(path)}".rstrip())
    problems = []
    if lost:
        problems.append(f"Redis lost crawl {crawl_id!r} while it ran (restarted without "
                        "persistence, flushed, or the crawl was deleted); its queued pages are gone")
    elif final["state"] != "finished":
        problems.append(f"crawl {crawl_id!r} is {final['state']}, not finished")
    elif done == 0:
        problems.append(f"crawl {crawl_id!r} finished without fetching any page; the worker logs "
                        f"in {logs} say why")
    elif failed >= done:
        problems.append(f"no page of crawl {crawl_id!r} succeeded: all {done} failed")
    quarantined = int(final["stats"].get("quarantined", 0))
    if quarantined:
        problems.append(f"{quarantined} stored entries of crawl {crawl_id!r} could not be read and "
                        f"were quarantined; 'statecrawl status {crawl_id}' shows them")
    for problem in problems:
        _error(problem)
    return 1 if problems or broken else 0


async def _failure_summary(store: CrawlStore, total: int, sample: int = FAILED_SAMPLE) -> str:
    """Failed pages grouped by error type, each with one example message.

    Reads at most *sample* keys of the crawl's ``failed`` set and their items;
    an unreadable item counts as ``unreadable item``, a Redis error leaves the
    summary without groups.
    """
    try:
        keys = await store.client.srandmember(store.keys.failed, sample)
        sink = await crawl_sink(store, os.environ.get("STATECRAWL_SINK") or "redis")
        if sink is None:
            raws = await store.client.hmget(store.keys.items, keys) if keys else []
        else:  # the failed items' bodies are in the crawl's sink
            raws = await asyncio.gather(*(asyncio.to_thread(sink.get, store.crawl_id, k.decode())
                                          for k in keys))
    except (RedisError, ConfigError, OSError) as exc:
        return f"error types unavailable: {exc}"
    groups: dict[str, list[Any]] = {}
    for raw in raws:
        if raw is None:
            continue  # the item went away meanwhile
        try:
            error = load_item(raw)["error"]
            kind, message = _one_line(error["type"], 60), str(error.get("message", ""))
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the summary
            kind, message = "unreadable item", f"{type(exc).__name__}: {exc}"
        group = groups.setdefault(kind, [0, message])
        group[0] += 1
    ranked = sorted(groups.items(), key=lambda g: (-g[1][0], g[0]))
    parts = [f"{kind}: {count}, e.g. {json.dumps(' '.join(message.split())[:160], ensure_ascii=False)}"
             for kind, (count, message) in ranked[:5]]
    if len(ranked) > 5:
        parts.append(f"{len(ranked) - 5} more error types")
    prefix = f"in a sample of {len(keys)}: " if total > len(keys) else ""
    return prefix + "; ".join(parts)
