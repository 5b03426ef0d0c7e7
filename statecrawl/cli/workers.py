"""The worker processes of ``statecrawl crawl`` / ``worker``: their command line, environment, start.

A worker is ``python -m scrapy crawl site -a ...`` (:func:`worker_command`)
with :mod:`statecrawl.cli.worker_settings` and the crawl's one Redis URL (and
epoch) in its environment (:func:`worker_env`). :func:`worker_command` checks
every value that goes on that command line first, because ``statecrawl
worker`` reads them from Redis: a spider name like ``--pidfile=/x`` would
otherwise be a Scrapy option. :func:`start_workers` starts a group of them,
each logging to its own file, in its own process group (signals reach them
only through :func:`statecrawl.cli.progress.supervise`); :func:`run_worker`
runs one in the foreground, passing signals on the same way.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier.scope import validate_start_url

__all__ = [
    "FORWARD", "HANGUP_GRACE", "KILL_AFTER", "log_tail", "run_worker", "spider_argv",
    "start_workers", "validate_worker_args", "worker_command", "worker_env",
]

#: Seconds workers get to stop by themselves after a SIGHUP before they are told
#: again (Scrapy's forced stop), then killed.
HANGUP_GRACE = 30.0
#: Seconds between that second SIGTERM and SIGKILL.
KILL_AFTER = 10.0
#: Signal received -> signal forwarded to the workers.
FORWARD: dict[int, int] = {
    signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM,
}
_SPIDER_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}")
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def validate_worker_args(spider: object, crawl_id: object, spider_args: object) -> None:
    """Refuse anything that could be more than a value on a worker's command line.

    The spider name must look like one (letters, digits, ``_``, ``-``, ``.``,
    not starting with ``-``), argument names must be identifiers, values plain
    strings, numbers or booleans without NUL or newline, ``url`` an http(s)
    start URL and the crawl id a valid one. Raises :class:`ConfigError` naming
    the field (``spider``, ``crawl_id``, ``args``, ``args.<name>``).
    """
    if not isinstance(spider, str) or not _SPIDER_NAME.fullmatch(spider):
        raise ConfigError(f"spider: invalid spider name {spider!r} (letters, digits, '_', '-', "
                          "'.'; not starting with '-')")
    try:
        validate_crawl_id(crawl_id)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"crawl_id: {exc}") from None
    if not isinstance(spider_args, dict):
        raise ConfigError(f"args: expected a JSON object, not {type(spider_args).__name__}")
    for name, value in spider_args.items():
        if not isinstance(name, str) or not _ARG_NAME.fullmatch(name):
            raise ConfigError(f"args: invalid argument name {name!r} (expected an identifier)")
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"args.{name}: {value!r} is not a finite number")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"args.{name}: expected a string, number or boolean, "
                              f"not {type(value).__name__}")
        if isinstance(value, str) and ("\0" in value or "\n" in value or "\r" in value):
            raise ConfigError(f"args.{name}: {value[:80]!r} contains a NUL or a line break")
    if "url" in spider_args:
        try:
            validate_start_url(spider_args["url"])
        except ConfigError as exc:
            raise ConfigError(f"args.url: {exc}") from None
        except (TypeError, AttributeError):
            raise ConfigError(f"args.url: {spider_args['url']!r} is not a URL") from None


def spider_argv(crawl_id: str, spider_args: dict[str, Any]) -> list[str]:
    """``-a name=value`` options for the spider; booleans as ``true``/``false``, ``None`` left out."""
    argv = ["-a", f"crawl_id={crawl_id}"]
    for name, value in spider_args.items():
        if value is None or name == "crawl_id":
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        argv += ["-a", f"{name}={text}"]
    return argv


def worker_command(spider: str, crawl_id: str, spider_args: dict[str, Any]) -> list[str]:
    """The worker's argv; raises :class:`ConfigError` for anything :func:`validate_worker_args` refuses.

    (Scrapy takes no ``--`` before the spider name: its parser keeps the
    ``--`` as a second spider name. The name is safe because it cannot
    start with ``-``.)
    """
    validate_worker_args(spider, crawl_id, spider_args)
    return [sys.executable, "-m", "scrapy", "crawl", spider, *spider_argv(crawl_id, spider_args)]


def worker_env(redis_url: str, out: Path, epoch: str | None = None) -> dict[str, str]:
    """Our environment plus the worker settings, the Redis URL, the output dir and the epoch.

    The settings are :mod:`statecrawl.cli.worker_settings` unless our environment
    names a ``SCRAPY_SETTINGS_MODULE`` of its own. *epoch* is the crawl's
    (``STATECRAWL_CRAWL_EPOCH``): a worker then refuses to create the crawl
    again if Redis lost it.
    """
    env = dict(os.environ)
    env.setdefault("SCRAPY_SETTINGS_MODULE", "statecrawl.cli.worker_settings")
    # Both names: STATECRAWL_REDIS_URL wins over REDIS_URL and may be set in our own env.
    env.update(REDIS_URL=redis_url, STATECRAWL_REDIS_URL=redis_url, STATECRAWL_OUTPUT_DIR=str(out))
    if epoch:
        env["STATECRAWL_CRAWL_EPOCH"] = epoch
    else:
        env.pop("STATECRAWL_CRAWL_EPOCH", None)
    return env


def start_workers(
    cmd: list[str], env: dict[str, str], log_paths: Sequence[Path]
) -> list[subprocess.Popen[bytes]]:
    """One worker per log file (appended to). Each gets its own process group, so a
    Ctrl-C in the terminal reaches them only through :func:`supervise`, once."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for path in log_paths:
            with path.open("ab") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, process_group=0,
                ))
    except BaseException:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        raise
    return procs


def run_worker(cmd: list[str], env: dict[str, str], *, grace: float = HANGUP_GRACE) -> tuple[int, int | None]:
    """Run one worker in the foreground; return its exit status and the first signal we got.

    The worker has its own process group, so a Ctrl-C or a hangup of the
    terminal reaches it only through us: SIGINT and SIGTERM are forwarded,
    SIGHUP as SIGTERM (escalated like in :func:`supervise`). Its output still
    goes to our stdout/stderr.
    """
    received: list[int] = []
    pending: list[int] = []  # signals that came before the worker existed
    holder: list[subprocess.Popen[bytes]] = []

    def forward(signum: int) -> None:
        proc = holder[0]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(FORWARD[signum])

    def on_signal(signum: int, _frame: object) -> None:
        repeated_hangup = signum == signal.SIGHUP and signal.SIGHUP in received
        received.append(signum)
        if repeated_hangup:
            return
        if holder:
            forward(signum)
        else:
            pending.append(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in FORWARD}
    try:
        proc = subprocess.Popen(  # noqa: S603 - validated argv, no shell
            cmd, env=env, stdin=subprocess.DEVNULL, process_group=0)
        holder.append(proc)  # from here on, on_signal forwards by itself
        while pending:
            forward(pending.pop(0))
        hangup_at: float | None = None
        escalated = False
        while True:
            try:
                return proc.wait(timeout=0.5), (received[0] if received else None)
            except subprocess.TimeoutExpired:
                pass
            if hangup_at is None and signal.SIGHUP in received:
                hangup_at = time.monotonic()
            if hangup_at is not None:
                waited = time.monotonic() - hangup_at
                if not escalated and waited >= grace:
                    escalated = True
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                elif waited >= grace + KILL_AFTER:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a worker log, indented, for an error message."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"    {line}\n" for line in tail)
