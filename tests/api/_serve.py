"""``statecrawl serve`` as a real process, raw HTTP to it, and jobs written straight to the store.

Job execution on workers does not exist yet, so the tests stand in for the
executor: :func:`make_job` creates a job and its documents with the
:class:`~statecrawl.api.jobs.JobStore` directly, and the API under test only
reads (and cancels) them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from statecrawl.api import JobStore, parse_request
from tests.conftest import ROOT, free_port

START_TIMEOUT = 30.0


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"serve did not stop within {timeout} s:\n{self.output()}") from None


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["STATECRAWL_NET_ALLOW"] = "127.0.0.1"  # scrape workers started by serve reach the test's origin
    env.update(extra)
    return env


def serve_command(redis_url: str, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "statecrawl.cli", "serve", "--redis-url", redis_url,
            "--port", str(port), *args]


@contextmanager
def serve(redis_url: str, tmp: Path, *args: str, env: Mapping[str, str] | None = None,
          port: int | None = None) -> Iterator[Serve]:
    """A running ``statecrawl serve`` (ready: /openapi.json answers); stopped with SIGTERM after."""
    port = port or free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(serve_command(redis_url, port, *args), cwd=ROOT,
                                env=serve_env(**(env or {})), stdout=out, stderr=subprocess.STDOUT)
    server = Serve(proc, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if http("GET", f"{server.url}/openapi.json", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{server.output()}"
            assert time.monotonic() < deadline, f"serve not ready in {START_TIMEOUT} s:\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            server.stop()


def http(method: str, url: str, body: bytes | str | Any = None, headers: Mapping[str, str] | None = None,
         timeout: float = 10) -> tuple[int, Any, Mapping[str, str]]:
    """(status, parsed JSON body or raw text, headers) of one request; HTTP errors are answers too."""
    data = body if isinstance(body, (bytes, type(None))) else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, head = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(raw), head
    except ValueError:
        return status, raw.decode(errors="replace"), head


def doc(i: int) -> dict[str, Any]:
    return {"markdown": f"page {i}", "metadata": {"sourceURL": f"https://e.com/{i}",
                                                 "url": f"https://e.com/{i}", "statusCode": 200}}


def make_job(redis_url: str, kind: str = "crawl", docs: int = 0, status: str | None = None,
             errors: Sequence[Mapping[str, Any]] = (), robots: Sequence[str] = ()) -> str:
    """The executor's stand-in: a job with *docs* documents (``page 0`` ...), ended as *status*."""
    async def main() -> str:
        client = Redis.from_url(redis_url)
        try:
            store = JobStore(client)
            if kind == "crawl":
                body = parse_request("v2", "crawl", {"url": "https://e.com", "limit": 5000})
            else:
                body = parse_request("v2", "batch", {"urls": [f"https://e.com/{i}" for i in range(docs)]
                                                     or ["https://e.com/"]})
            job, _ = await store.create(kind, body)  # type: ignore[arg-type]
            for start in range(0, docs, 100):
                await store.add(job.id, [doc(i) for i in range(start, min(start + 100, docs))],
                                discovered=min(100, docs - start))
            if errors or robots:
                await store.add_errors(job.id, errors, robots)
            if status is not None:
                await store.finish(job.id, status)
            return job.id
        finally:
            await client.aclose()
    return asyncio.run(main())


def job_status(redis_url: str, job_id: str) -> str | None:
    async def main() -> str | None:
        client = Redis.from_url(redis_url)
        try:
            job = await JobStore(client).get(job_id)
            return None if job is None else job.status
        finally:
            await client.aclose()
    return asyncio.run(main())
