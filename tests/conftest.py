"""Session fixtures: a private redis-server, the demo site, and crawl runners.

Every test session starts its own ``redis-server`` (free port, temp dir, AOF
on) and never touches the machine's Redis on 6379. Each test gets its own
crawl id, so tests share the server without sharing state.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.connection import redis_from_url
from statecrawl.frontier.store import CrawlStore

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # more redis-server options (later ones win)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (make install provides it)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.dir / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self, sig: str = "term") -> None:
        if self.proc is not None:
            if sig == "kill":
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def crawl_id() -> str:
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def site() -> Iterator[DemoSite]:
    with DemoSite(pages=60) as s:
        yield s


@pytest.fixture(scope="session")
def big_site() -> Iterator[DemoSite]:
    with DemoSite(pages=1000) as s:
        yield s


def worker_env(redis_url: str, out_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a `scrapy crawl` subprocess run from the project root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
    env["REDIS_URL"] = redis_url
    env["PYTHONPATH"] = str(ROOT)
    if out_dir is not None:
        env["STATECRAWL_OUTPUT_DIR"] = str(out_dir)
    env.update(extra)
    return env


def scrapy_crawl(
    args: list[str], env: dict[str, str], *, wait: bool = True, timeout: float = 120,
) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    """Run ``scrapy crawl site <args>`` in the project root."""
    cmd = [sys.executable, "-m", "scrapy", "crawl", "site", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


T = TypeVar("T")


def run_client(redis_url: str, body: Callable[[AsyncRedis], Awaitable[T]]) -> T:
    """Run *body* with a fresh asyncio Redis client (bytes replies) on its own loop."""
    async def main() -> T:
        client = redis_from_url(redis_url)  # a cluster client for a redis+cluster:// URL
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def run_store(redis_url: str, crawl_id: str, body: Callable[[CrawlStore], Awaitable[T]]) -> T:
    """Run *body* with a fresh CrawlStore for *crawl_id* (its crawl opened) on its own loop."""
    async def main() -> T:
        client = redis_from_url(redis_url)
        try:
            store = CrawlStore(client, crawl_id)
            await store.open_crawl(spider="test")
            return await body(store)
        finally:
            await client.aclose()

    return asyncio.run(main())
