"""An embedded local Redis, so a user with no Redis set up can crawl and resume.

When no ``REDIS_URL`` is configured, statecrawl starts a private
``redis-server`` for the project and keeps it running after the crawl ends:
the next run (a resume) and other local workers find it and share its state.

Layout under ``data_dir`` (default ``.statecrawl``)::

    <data_dir>/redis.sock        unix socket the server listens on (see below)
    <data_dir>/redis.lock        flock(2) lock: only one process starts a server
    <data_dir>/redis/            --dir: the append-only file (appendonlydir/)
    <data_dir>/redis/redis.pid   --pidfile
    <data_dir>/redis/redis.log   --logfile, quoted in errors when start-up fails

Why a unix socket and no TCP port (``--port 0``): nothing can clash with a
Redis the user already runs on 6379 or with another project's embedded
server, and with ``--unixsocketperm 700`` only processes of this user on this
machine can connect, so the server needs no password.

Why AOF only (``--appendonly yes --save ""``): every write reaches disk
within ``appendfsync`` (a second by default) and a crash loses at most that,
while RDB snapshots would fork the server and lose minutes.

Socket paths: ``sun_path`` holds at most 107 bytes on Linux (103 on macOS).
When ``<data_dir>/redis.sock`` is longer, the socket goes to
``<tempdir>/statecrawl-<uid>/<sha256(data_dir)[:16]>.sock`` instead: short,
per user (the directory is created 0700), and still one fixed path per
data dir, so every process finds the same server.

Supervision: the server outlives any one crawl, so nothing restarts it
by itself when it dies (SIGKILL, the OOM killer). ``statecrawl crawl`` does:
when its status polls fail it calls :func:`restart_embedded_redis`, which
starts the server again from its append-only file if it is down (same
socket, so the workers' retries reach it) and does nothing if it is up.

POSIX only (``fcntl``, unix sockets), like ``redis-server`` itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from statecrawl.exceptions import ConfigError, RedisUnavailable

__all__ = [
    "EmbeddedStatus",
    "embedded_status",
    "embedded_url",
    "ensure_embedded_redis",
    "restart_embedded_redis",
    "stop_embedded_redis",
]

INSTALL_HINT = (
    "redis-server was not found on PATH. Install it (Debian/Ubuntu: sudo apt-get install "
    "redis-server; macOS: brew install redis) or point statecrawl at a running Redis with "
    "REDIS_URL=redis://host:6379/0"
)
#: Seconds to wait for a freshly started server to answer PING.
STARTUP_TIMEOUT = 10.0
#: Seconds to keep waiting while a server answers LOADING (replaying a big AOF).
LOADING_TIMEOUT = 300.0
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
_APPENDFSYNC = ("always", "everysec", "no")
_Probe = Literal["up", "loading", "down"]


class EmbeddedStatus(TypedDict):
    """What ``statecrawl redis status`` shows."""

    running: bool
    url: str
    pid: int | None
    data_dir: str
    socket: str
    log_file: str


@dataclass(frozen=True)
class _Paths:
    data_dir: Path
    redis_dir: Path
    socket: Path
    pidfile: Path
    logfile: Path
    lockfile: Path

    @property
    def url(self) -> str:
        return "unix://" + quote(str(self.socket))


def _paths(data_dir: str | Path) -> _Paths:
    root = Path(data_dir).expanduser().resolve()
    redis_dir = root / "redis"
    sock = root / "redis.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
        sock = Path(tempfile.gettempdir()).resolve() / f"statecrawl-{os.getuid()}" / f"{digest}.sock"
        if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"cannot place the embedded Redis socket: both {root / 'redis.sock'} and {sock} "
                f"exceed {_MAX_SOCKET_PATH} bytes; use a shorter STATECRAWL_DATA_DIR or TMPDIR"
            )
    return _Paths(
        root, redis_dir, sock, redis_dir / "redis.pid", redis_dir / "redis.log", root / "redis.lock"
    )


def embedded_url(data_dir: str | Path = ".statecrawl") -> str:
    """The URL the embedded Redis of ``data_dir`` has (or would have); starts nothing."""
    return _paths(data_dir).url


def _client(sock: Path) -> redis.Redis:
    """A one-shot client: no retries, so probing a dead socket is instant."""
    return redis.Redis(
        unix_socket_path=str(sock),
        socket_connect_timeout=1,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def _probe(sock: Path) -> _Probe:
    if not sock.exists():
        return "down"
    client = _client(sock)
    try:
        client.ping()
        return "up"
    except redis.BusyLoadingError:
        return "loading"
    except (redis.RedisError, OSError):
        return "down"
    finally:
        client.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie nobody reaped is dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _is_live_redis(pid: int | None) -> bool:
    """True if ``pid`` runs redis-server (checked via /proc where there is one)."""
    if pid is None or not _pid_alive(pid):
        return False
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _log_tail(logfile: Path, lines: int = 15) -> str:
    try:
        tail = logfile.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {logfile})"
    return "\n".join(tail) or f"(empty log at {logfile})"


@contextlib.contextmanager
def _locked(lockfile: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock; closing the fd (also on process death) releases it."""
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"another process has held {lockfile} for {timeout:.0f}s while starting "
                        "the embedded Redis; is it stuck?"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _wait_ready(paths: _Paths, timeout: float) -> None:
    """Wait until the server PONGs; LOADING extends the wait, a dead pid ends it."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        state = _probe(paths.socket)
        if state == "up":
            return
        if state == "loading":
            deadline = max(deadline, start + LOADING_TIMEOUT)
        else:
            pid = _read_pid(paths.pidfile)
            if pid is not None and not _pid_alive(pid):
                raise RedisUnavailable(
                    f"the embedded redis-server (pid {pid}) exited during start-up. "
                    f"Last lines of {paths.logfile}:\n{_log_tail(paths.logfile)}"
                )
        if time.monotonic() > deadline:
            raise RedisUnavailable(
                f"the embedded redis-server did not answer on {paths.socket} within "
                f"{time.monotonic() - start:.0f}s. Last lines of {paths.logfile}:\n"
                f"{_log_tail(paths.logfile)}"
            )
        time.sleep(0.05)


def _start(paths: _Paths, executable: str, appendfsync: str) -> None:
    paths.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if paths.socket.parent != paths.data_dir:
        paths.socket.parent.mkdir(mode=0o700, exist_ok=True)
        st = paths.socket.parent.lstat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise RedisUnavailable(
                f"{paths.socket.parent} is not a private directory of this user; remove it "
                "or use a shorter STATECRAWL_DATA_DIR"
            )
    paths.pidfile.unlink(missing_ok=True)  # stale after a crash; must not fool _wait_ready
    cmd = [
        executable,
        "--dir", str(paths.redis_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--port", "0",
        "--unixsocket", str(paths.socket),
        "--unixsocketperm", "700",
        "--pidfile", str(paths.pidfile),
        "--logfile", str(paths.logfile),
        "--daemonize", "yes",
    ]  # fmt: skip
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=paths.redis_dir,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisUnavailable(f"could not run {executable}: {exc}") from exc
    if proc.returncode != 0:
        output = proc.stdout.decode(errors="replace").strip()
        raise RedisUnavailable(
            f"{executable} exited with status {proc.returncode}: {output}\n"
            f"Last lines of {paths.logfile}:\n{_log_tail(paths.logfile)}"
        )


def ensure_embedded_redis(
    data_dir: str | Path = ".statecrawl", *, appendfsync: str = "everysec"
) -> str:
    """Return the ``unix://`` URL of the embedded Redis of ``data_dir``, starting it if needed.

    A server already answering on the socket is reused, which is how a
    resumed run and other local workers share state. The server is
    daemonized and outlives this process on purpose.
    """
    _ensure(data_dir, appendfsync)
    return _paths(data_dir).url


def _ensure(data_dir: str | Path, appendfsync: str) -> bool:
    """Make the server answer; True if this call started it."""
    if appendfsync not in _APPENDFSYNC:
        raise ConfigError(f"appendfsync must be one of {_APPENDFSYNC}, not {appendfsync!r}")
    paths = _paths(data_dir)
    if _probe(paths.socket) == "up":
        return False
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisUnavailable(INSTALL_HINT)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    started = False
    with _locked(paths.lockfile, STARTUP_TIMEOUT + LOADING_TIMEOUT + 30):
        # A live pid with a silent socket is a server still starting (or hung):
        # a second one would unlink its socket and share its AOF, so wait instead.
        if _probe(paths.socket) == "down" and not _is_live_redis(_read_pid(paths.pidfile)):
            _start(paths, executable, appendfsync)
            started = True
        _wait_ready(paths, STARTUP_TIMEOUT)
    return started


def restart_embedded_redis(
    data_dir: str | Path = ".statecrawl", *, appendfsync: str = "everysec"
) -> int | None:
    """Start the embedded Redis of ``data_dir`` again if it is down; return its new pid.

    ``None`` when there was nothing to do: the server answers, is loading its
    append-only file, or another process restarted it meanwhile. The data
    comes back from the AOF (see :func:`ensure_embedded_redis` for the
    locking). Raises :class:`~statecrawl.exceptions.RedisUnavailable` saying
    why (with the end of its log) when it cannot be started.
    """
    if _probe(_paths(data_dir).socket) != "down":
        return None
    if not _ensure(data_dir, appendfsync):
        return None
    return embedded_status(data_dir)["pid"]


def stop_embedded_redis(data_dir: str | Path = ".statecrawl") -> bool:
    """SHUTDOWN the embedded Redis of ``data_dir``; True if one was running.

    Returns only once the process has exited (AOF flushed), so a following
    :func:`ensure_embedded_redis` cannot race the old server for the socket.
    """
    paths = _paths(data_dir)
    if not paths.data_dir.is_dir():
        return False
    with _locked(paths.lockfile, STARTUP_TIMEOUT + LOADING_TIMEOUT + 30):
        if _probe(paths.socket) == "down":
            return False
        client = _client(paths.socket)
        try:
            pid = int(client.info("server")["process_id"])
            client.shutdown()
        except redis.ConnectionError:
            return False  # went away between probe and SHUTDOWN
        except redis.RedisError as exc:
            raise RedisUnavailable(f"could not stop the embedded Redis at {paths.url}: {exc}") from exc
        finally:
            client.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"the embedded redis-server (pid {pid}) did not exit after SHUTDOWN. "
                    f"Last lines of {paths.logfile}:\n{_log_tail(paths.logfile)}"
                )
            time.sleep(0.05)
    return True


def embedded_status(data_dir: str | Path = ".statecrawl") -> EmbeddedStatus:
    """Whether the embedded Redis of ``data_dir`` runs, and where; starts nothing."""
    paths = _paths(data_dir)
    running = _probe(paths.socket) != "down"
    pid: int | None = None
    if running:
        client = _client(paths.socket)
        try:
            pid = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            pid = _read_pid(paths.pidfile)
        finally:
            client.close()
    return EmbeddedStatus(
        running=running,
        url=paths.url,
        pid=pid,
        data_dir=str(paths.data_dir),
        socket=str(paths.socket),
        log_file=str(paths.logfile),
    )
