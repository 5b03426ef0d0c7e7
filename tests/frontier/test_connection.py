"""Tests for statecrawl.frontier.connection and statecrawl.frontier.embedded.

Every server here is a real ``redis-server`` started by the test itself in a
private ``tmp_path`` and stopped by a fixture finalizer; the machine's own
Redis on 127.0.0.1:6379 is never contacted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy.settings import Settings

from statecrawl.exceptions import ConfigError, RedisUnavailable
from statecrawl.frontier import embedded
from statecrawl.frontier.connection import (
    connect,
    connect_sync,
    redact_url,
    redis_url_from_settings,
    resolve_redis_url,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
URL_NAMES = ("STATECRAWL_REDIS_URL", "REDIS_URL")


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_URL exported on this machine must not leak into any test."""
    for name in URL_NAMES:
        monkeypatch.delenv(name, raising=False)


def _kill_leftover(data_dir: Path) -> None:
    """Last resort if SHUTDOWN failed: never leave a daemon behind."""
    pidfile = data_dir.resolve() / "redis" / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if embedded._is_live_redis(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Hand out data dirs under tmp_path; stop whatever server runs in each."""
    made: list[Path] = []

    def make(name: str = "sc") -> Path:
        path = tmp_path / name
        made.append(path)
        return path

    yield make
    for path in made:
        try:
            embedded.stop_embedded_redis(path)
        finally:
            _kill_leftover(path)


@pytest.fixture
def data_dir(data_dirs: Callable[[str], Path]) -> Path:
    return data_dirs("sc")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert port != 6379
    return port


def _starts(data_dir: Path) -> int:
    """How many times a redis-server started for this data dir (from its log)."""
    log = data_dir / "redis" / "redis.log"
    return log.read_text().count("Redis is starting")


# -- URL selection -------------------------------------------------------------


@pytest.mark.parametrize("as_settings", [True, False], ids=["Settings", "dict"])
@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        ({}, {}, None),
        ({"STATECRAWL_REDIS_URL": "redis://a/0", "REDIS_URL": "redis://b/0"}, {}, "redis://a/0"),
        ({"REDIS_URL": "redis://b/0"}, {"STATECRAWL_REDIS_URL": "redis://env/0"}, "redis://b/0"),
        ({}, {"STATECRAWL_REDIS_URL": "redis://c/0", "REDIS_URL": "redis://d/0"}, "redis://c/0"),
        ({}, {"REDIS_URL": "redis://d/0"}, "redis://d/0"),
        ({"STATECRAWL_REDIS_URL": "", "REDIS_URL": ""}, {"REDIS_URL": "redis://d/0"}, "redis://d/0"),
        ({}, {"STATECRAWL_REDIS_URL": "", "REDIS_URL": ""}, None),
    ],
)
def test_url_precedence(
    monkeypatch: pytest.MonkeyPatch,
    as_settings: bool,
    settings: dict[str, str],
    env: dict[str, str],
    expected: str | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    source: Any = Settings(settings) if as_settings else settings
    assert redis_url_from_settings(source) == expected


def test_resolve_prefers_configured_url(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    url = resolve_redis_url({"REDIS_URL": "redis://example:6380/1"}, data_dir)
    assert url == "redis://example:6380/1"
    assert not data_dir.exists(), "no embedded server when a URL is configured"


def test_resolve_starts_embedded(data_dirs: Callable[[str], Path]) -> None:
    from_setting, from_arg = data_dirs("setting"), data_dirs("arg")
    settings = Settings({"STATECRAWL_DATA_DIR": str(from_setting)})
    assert resolve_redis_url(settings) == f"unix://{from_setting}/redis.sock"
    assert resolve_redis_url(settings, from_arg) == f"unix://{from_arg}/redis.sock"
    assert embedded.embedded_status(from_setting)["running"]
    assert embedded.embedded_status(from_arg)["running"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://alice:s3cret@host:6380/2", "rediss://alice:***@host:6380/2"),
        ("redis://s3cret@host/0", "redis://***@host/0"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("unix://:s3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("unix:///tmp/x/redis.sock", "unix:///tmp/x/redis.sock"),
        ("redis://:p%40ss@host:notaport/0", "redis://:***@host:notaport/0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# -- connect() -------------------------------------------------------------------


def test_connect_closed_port_is_quick_and_redacted() -> None:
    url = f"redis://admin:s3cret@127.0.0.1:{_closed_port()}/0"
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        asyncio.run(connect(url))
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert "s3cret" not in message
    assert "admin:***@127.0.0.1" in message
    assert "Is it running?" in message and "REDIS_URL" in message

    with pytest.raises(RedisUnavailable) as info:
        connect_sync(url)
    assert "s3cret" not in str(info.value)


def test_connect_bad_scheme_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"http://:\*\*\*@host"):
        connect_sync("http://:s3cret@host/0")


def test_connect_to_embedded(data_dir: Path) -> None:
    url = embedded.ensure_embedded_redis(data_dir)

    async def roundtrip() -> tuple[Any, Any]:
        client = await connect(url, name="worker-1")
        try:
            await client.set("k", "v")
            return await client.get("k"), await client.client_getname()
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == (b"v", "worker-1")  # redis-py decodes names
    client = connect_sync(url)
    try:
        assert client.get("k") == b"v"
        assert client.client_getname() == "statecrawl"
    finally:
        client.close()


# -- embedded Redis ----------------------------------------------------------------


def test_embedded_persists_across_restart(data_dir: Path) -> None:
    url = embedded.ensure_embedded_redis(data_dir)
    assert url == f"unix://{data_dir}/redis.sock"
    client = connect_sync(url)
    try:
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("crawl:seen", "42")
    finally:
        client.close()
    first = embedded.embedded_status(data_dir)
    assert first["running"] and first["pid"] is not None

    assert embedded.stop_embedded_redis(data_dir) is True
    assert embedded.embedded_status(data_dir)["running"] is False
    assert embedded.stop_embedded_redis(data_dir) is False

    assert embedded.ensure_embedded_redis(data_dir) == url
    client = connect_sync(url)
    try:
        assert client.get("crawl:seen") == b"42"
    finally:
        client.close()
    assert embedded.embedded_status(data_dir)["pid"] != first["pid"]
    assert _starts(data_dir) == 2


def test_embedded_reused_and_appendfsync(data_dir: Path) -> None:
    url = embedded.ensure_embedded_redis(data_dir, appendfsync="always")
    assert embedded.ensure_embedded_redis(data_dir) == url
    assert _starts(data_dir) == 1
    client = connect_sync(url)
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        client.close()
    with pytest.raises(ConfigError, match="appendfsync"):
        embedded.ensure_embedded_redis(data_dir, appendfsync="sometimes")


def test_concurrent_processes_start_one_server(data_dir: Path) -> None:
    start_at = time.time() + 2.0
    code = (
        "import sys, time\n"
        "from statecrawl.frontier.embedded import ensure_embedded_redis\n"
        f"time.sleep(max(0.0, {start_at!r} - time.time()))\n"
        "print(ensure_embedded_redis(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", code, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(6)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 6, results
    assert {out.strip() for out, _ in results} == {f"unix://{data_dir}/redis.sock"}
    assert _starts(data_dir) == 1


def test_concurrent_threads_start_one_server(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_start = embedded._start

    def counting_start(*args: Any) -> None:
        calls.append(1)
        real_start(*args)

    monkeypatch.setattr(embedded, "_start", counting_start)
    barrier = threading.Barrier(8)
    urls: list[str] = []

    def worker() -> None:
        barrier.wait()
        urls.append(embedded.ensure_embedded_redis(data_dir))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(urls) == 8 and len(set(urls)) == 1
    assert len(calls) == 1
    assert _starts(data_dir) == 1


def test_missing_redis_server(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RedisUnavailable) as info:
        embedded.ensure_embedded_redis(data_dir)
    message = str(info.value)
    assert "redis-server was not found on PATH" in message
    assert "sudo apt-get install redis-server" in message
    assert "brew install redis" in message
    assert "REDIS_URL=redis://host:6379/0" in message


def test_failed_start_reports_log(data_dir: Path) -> None:
    aof_dir = data_dir / "redis" / "appendonlydir"
    aof_dir.mkdir(parents=True)
    (aof_dir / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with pytest.raises(RedisUnavailable) as info:
        embedded.ensure_embedded_redis(data_dir)
    message = str(info.value)
    assert "redis.log" in message
    assert "manifest" in message.lower(), message


def test_long_data_dir_falls_back_to_short_socket(data_dirs: Callable[[str], Path]) -> None:
    data_dir = data_dirs("d" * 60 + "/" + "e" * 60)
    assert len(str(data_dir / "redis.sock")) > 107
    url = embedded.ensure_embedded_redis(data_dir)
    short_dir = Path(tempfile.gettempdir()).resolve() / f"statecrawl-{os.getuid()}"
    assert url.startswith(f"unix://{short_dir}/") and url.endswith(".sock")
    assert len(url) - len("unix://") <= 107
    assert embedded.embedded_url(data_dir) == url
    assert (data_dir / "redis" / "redis.log").exists()
    client = connect_sync(url)
    try:
        assert client.ping() is True
    finally:
        client.close()
    status = embedded.embedded_status(data_dir)
    assert status["running"] and status["socket"] == url[len("unix://") :]
    assert embedded.stop_embedded_redis(data_dir) is True
    assert not Path(status["socket"]).exists()


def test_status_of_unknown_dir_starts_nothing(tmp_path: Path) -> None:
    status = embedded.embedded_status(tmp_path / "nothing")
    assert status == {
        "running": False,
        "url": f"unix://{tmp_path}/nothing/redis.sock",
        "pid": None,
        "data_dir": str(tmp_path / "nothing"),
        "socket": f"{tmp_path}/nothing/redis.sock",
        "log_file": f"{tmp_path}/nothing/redis/redis.log",
    }
    assert embedded.stop_embedded_redis(tmp_path / "nothing") is False
    assert not (tmp_path / "nothing").exists()


def test_client_types(data_dir: Path) -> None:
    """connect() hands back the asyncio client, connect_sync() the blocking one."""
    url = embedded.ensure_embedded_redis(data_dir)

    async def open_close() -> type:
        client = await connect(url)
        await client.aclose()
        return type(client)

    assert issubclass(asyncio.run(open_close()), redis.asyncio.Redis)
    client = connect_sync(url)
    client.close()
    assert isinstance(client, redis.Redis)


def test_restart_embedded_after_sigkill(data_dir: Path) -> None:
    """What `statecrawl crawl` does when its embedded Redis dies: start it again from the AOF."""
    url = embedded.ensure_embedded_redis(data_dir)
    assert embedded.restart_embedded_redis(data_dir) is None  # up: nothing to do
    client = connect_sync(url)
    try:
        client.set("crawl:seen", "42")
    finally:
        client.close()
    old = embedded.embedded_status(data_dir)["pid"]
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while embedded._pid_alive(old):
        assert time.monotonic() < deadline, "redis-server survived SIGKILL"
        time.sleep(0.05)
    assert embedded.embedded_status(data_dir)["running"] is False

    new = embedded.restart_embedded_redis(data_dir)
    assert new is not None and new != old
    assert embedded.embedded_status(data_dir)["pid"] == new
    client = connect_sync(url)  # the same socket path
    try:
        assert client.get("crawl:seen") == b"42"  # from the append-only file
    finally:
        client.close()
    assert _starts(data_dir) == 2


# -- authentication ------------------------------------------------------------------


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test only, with --requirepass, on a free port."""
    port = _closed_port()
    exe = shutil.which("redis-server")
    assert exe is not None
    proc = subprocess.Popen(  # noqa: S603
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--appendonly", "no", "--requirepass", "right-pass-8d3f", "--logfile",
         str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("userinfo", [":wrong-pass-7c1e@", "", "alice:wrong-pass-7c1e@"])
def test_connect_with_bad_credentials_says_authentication_failed(
    password_redis: int, userinfo: str
) -> None:
    url = f"redis://{userinfo}127.0.0.1:{password_redis}/0"
    with pytest.raises(RedisUnavailable) as info:
        asyncio.run(connect(url))
    message = str(info.value)
    assert message.startswith(f"authentication failed at Redis {redact_url(url)}: ")
    assert "Check the password in REDIS_URL" in message
    assert "Is it running?" not in message
    assert "wrong-pass-7c1e" not in message and "right-pass-8d3f" not in message
    assert "\n" not in message
    with pytest.raises(RedisUnavailable, match="^authentication failed"):
        connect_sync(url)
    # the right password works: the server is fine, only the credentials were not
    connect_sync(f"redis://:right-pass-8d3f@127.0.0.1:{password_redis}/0").close()
