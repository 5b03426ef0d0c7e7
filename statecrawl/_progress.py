"""The worker processes of ``statecrawl crawl`` / ``worker`` and the live progress line.

A worker is ``python -m scrapy crawl site -a ...`` (:func:`worker_command`)
with the project settings and the crawl's one Redis URL in its environment
(:func:`worker_env`). :func:`start_workers` starts a group of them, each
logging to its own file; :func:`supervise` waits for a group of worker processes, refreshing a
:class:`Progress` line from the crawl's Redis status about twice a second and
forwarding SIGINT/SIGTERM to the workers (which close gracefully, releasing
their leases, so the crawl can be resumed).

On a terminal the line is rewritten in place (``\\r``); otherwise (a log
file, CI) one line is written every few seconds so logs stay readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from redis.exceptions import RedisError

__all__ = [
    "Progress", "discovered", "format_duration", "log_tail", "spider_argv", "start_workers",
    "supervise", "worker_command", "worker_env",
]


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
    return [sys.executable, "-m", "scrapy", "crawl", spider, *spider_argv(crawl_id, spider_args)]


def worker_env(redis_url: str, out: Path) -> dict[str, str]:
    """Our environment plus the project settings, the Redis URL and the output dir."""
    env = dict(os.environ)
    # Both names: STATECRAWL_REDIS_URL wins over REDIS_URL and may be set in our own env.
    env.update(
        SCRAPY_SETTINGS_MODULE="settings", REDIS_URL=redis_url,
        STATECRAWL_REDIS_URL=redis_url, STATECRAWL_OUTPUT_DIR=str(out),
    )
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


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a worker log, indented, for an error message."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"    {line}\n" for line in tail)


def discovered(status: dict[str, Any]) -> int:
    """Pages known to the crawl so far: done, waiting in the frontier, or being fetched."""
    return int(status["done"]) + int(status["queued"]) + int(status["in_flight"])


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One status line: rewritten in place on a TTY, printed every *interval* seconds otherwise.

    The rate is measured over the last *window* seconds, so it follows the
    crawl's current speed rather than its average since start.
    """

    def __init__(
        self, stream: TextIO, *, enabled: bool = True, tty: bool | None = None,
        interval: float = 5.0, window: float = 5.0,
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self.window = window
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._last_print = float("-inf")
        self._dirty = False

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return max(d1 - d0, 0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, status: dict[str, Any], now: float) -> str:
        return (
            f"[{format_duration(now - self.started)}] {status['done']}/{discovered(status)} pages, "
            f"{status['failed']} failed, {self.rate():.1f} pages/s, {status['workers']} workers"
        )

    def update(self, status: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, int(status["done"])))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self.line(status, now))
            self._dirty = True
        elif now - self._last_print >= self.interval:
            self.stream.write(self.line(status, now) + "\n")
            self._last_print = now
        else:
            return
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line so whatever follows starts on a fresh line."""
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False


async def supervise(
    procs: Sequence[subprocess.Popen[bytes]],
    poll_status: Callable[[], Awaitable[dict[str, Any]]],
    progress: Progress,
    *,
    interval: float = 0.5,
) -> int | None:
    """Wait until every process in *procs* has exited, updating *progress*.

    SIGINT and SIGTERM received meanwhile are forwarded to the workers still
    running (a second Ctrl-C makes Scrapy stop without waiting for requests
    in flight). Returns the first signal received, or ``None``.
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def forward(signum: int) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    installed: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, forward, signum)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            continue
        installed.append(signum)
    try:
        while True:
            try:
                progress.update(await poll_status())
            except (RedisError, OSError):
                pass  # a blip in the progress display is not worth failing the crawl
            if all(proc.poll() is not None for proc in procs):
                break
            await asyncio.sleep(interval)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        progress.close()
    return received[0] if received else None
