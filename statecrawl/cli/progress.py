"""The live progress line of ``statecrawl crawl``, and the supervision of its workers.

:func:`supervise` waits for a group of worker processes (started by
:func:`statecrawl.cli.workers.start_workers`), refreshing a :class:`Progress`
line from the crawl's Redis status about twice a second and forwarding
SIGINT/SIGTERM to the workers (which close gracefully, releasing their
leases, so the crawl can be resumed). SIGHUP (the terminal went away) is
forwarded as SIGTERM, and since nobody is left to press Ctrl-C twice,
workers still running :data:`~statecrawl.cli.workers.HANGUP_GRACE` s later are
stopped without waiting (a second SIGTERM), then killed.

On a terminal the line is rewritten in place (``\\r``); otherwise (a log
file, CI) one line is written every few seconds so logs stay readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from redis.exceptions import RedisError

from statecrawl.cli.workers import FORWARD, HANGUP_GRACE, KILL_AFTER
from statecrawl.exceptions import StatecrawlError

__all__ = ["REDIS_LOST_GRACE", "PollErrorHandler", "Progress", "discovered", "format_duration",
           "supervise"]

#: The same after Redis is lost for good: the workers cannot hand anything back
#: then, and would retry forever.
REDIS_LOST_GRACE = 5.0
#: Seconds of failing status polls before ``supervise`` says that Redis does not answer.
SILENCE_NOTICE = 10.0



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


PollErrorHandler = Callable[[BaseException], Awaitable[None]]


async def supervise(
    procs: Sequence[subprocess.Popen[bytes]] | Callable[[], Sequence[subprocess.Popen[bytes]]],
    poll_status: Callable[[], Awaitable[dict[str, Any]]],
    progress: Progress,
    *,
    interval: float = 0.5,
    on_poll_error: PollErrorHandler | None = None,
    notice: Callable[[str], None] | None = None,
    grace: float = HANGUP_GRACE,
    lost_grace: float = REDIS_LOST_GRACE,
) -> int | None:
    """Wait until every worker has exited, updating *progress*; return the first signal received.

    *procs* may be a callable that starts them: the signal handlers are then
    in place before the first worker exists, so no signal can orphan one.
    SIGINT and SIGTERM are forwarded to the workers still running (a second
    Ctrl-C makes Scrapy stop without waiting for requests in flight); SIGHUP
    is forwarded as SIGTERM (once: a terminal may send several), and
    escalated after *grace* seconds (a second SIGTERM, then SIGKILL
    :data:`KILL_AFTER` s later) since no one is left at the terminal to do it.

    When a status poll fails, *on_poll_error* is awaited with the error (the
    CLI restarts a dead embedded Redis there). If it raises
    :class:`StatecrawlError`, the crawl cannot go on: the workers get SIGTERM,
    escalated after *lost_grace* seconds, and the error is re-raised once they
    are gone. Polls failing for :data:`SILENCE_NOTICE` s are reported through
    *notice* (once per outage), and so is the recovery.
    """
    loop = asyncio.get_running_loop()
    running: list[subprocess.Popen[bytes]] = []
    received: list[int] = []
    stopping_since: float | None = None  # escalate from here on (hangup, lost Redis)
    stop_grace = grace
    escalated = killed = False
    failure: StatecrawlError | None = None

    def signal_all(signum: int) -> None:
        for proc in running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def on_signal(signum: int) -> None:
        nonlocal stopping_since
        repeated_hangup = signum == signal.SIGHUP and signal.SIGHUP in received
        received.append(signum)
        if repeated_hangup:
            return
        signal_all(FORWARD[signum])
        if signum == signal.SIGHUP and stopping_since is None:
            stopping_since = time.monotonic()

    installed: list[int] = []
    for signum in FORWARD:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            continue
        installed.append(signum)
    silent_since: float | None = None
    told_silence = False
    try:
        running.extend(procs() if callable(procs) else procs)
        while True:
            try:
                status = await poll_status()
            except Exception as exc:  # noqa: BLE001 - a status we cannot read must not orphan workers
                now = time.monotonic()
                silent_since = now if silent_since is None else silent_since
                if notice is not None and not told_silence and now - silent_since >= SILENCE_NOTICE:
                    progress.close()
                    notice(f"Redis has not answered for {now - silent_since:.0f}s ({exc}); "
                           "the workers keep retrying")
                    told_silence = True
                lost = isinstance(exc, (RedisError, OSError))
                if lost and on_poll_error is not None and failure is None:
                    try:
                        await on_poll_error(exc)
                    except StatecrawlError as err:
                        failure = err
                        signal_all(signal.SIGTERM)
                        stopping_since, stop_grace = time.monotonic(), lost_grace
            else:
                if told_silence and notice is not None:
                    progress.close()
                    notice("Redis answers again")
                silent_since, told_silence = None, False
                progress.update(status)
            if all(proc.poll() is not None for proc in running):
                break
            if stopping_since is not None:
                waited = time.monotonic() - stopping_since
                if not escalated and waited >= stop_grace:
                    escalated = True
                    signal_all(signal.SIGTERM)  # Scrapy's second signal: stop now
                elif not killed and waited >= stop_grace + KILL_AFTER:
                    killed = True
                    for proc in running:
                        if proc.poll() is None:
                            with contextlib.suppress(ProcessLookupError, PermissionError):
                                os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_workers)
                            with contextlib.suppress(ProcessLookupError):
                                proc.kill()
            await asyncio.sleep(interval)
    except BaseException:
        signal_all(signal.SIGTERM)  # whatever went wrong here, the workers must not run on unseen
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        progress.close()
    if failure is not None:
        raise failure
    return received[0] if received else None
