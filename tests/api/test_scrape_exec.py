"""POST /scrape's execution path: long-running scrape workers, replies through Redis.

Real processes throughout: a private redis-server, ``scrapy crawl scrape``
workers (the worktree's code, via ``worker_env``'s PYTHONPATH), a local
target site (:mod:`tests.api._origin`), and :class:`ScrapeService` or the
API in front of them. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from statecrawl.api import ScrapeService, ScrapeTimeout, parse_request
from statecrawl.api.models import ScrapeRequest
from statecrawl.api.scrape import SCRAPE_META_KEY, SCRAPE_SPIDER
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.spiders import scrape as scrape_spider
from tests.api._origin import Origin
from tests.conftest import ROOT, RedisServer, worker_env

START_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as site:
        yield site


def start_worker(redis_url: str, crawl_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(redis_url, log.parent / "out", SCRAPY_SETTINGS_MODULE="statecrawl.cli.worker_settings",
                     STATECRAWL_NET_GUARD="true", STATECRAWL_NET_ALLOW="127.0.0.1")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scrapy", "crawl", "scrape", "-a", f"crawl_id={crawl_id}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_joined(server: RedisServer, crawl_id: str, proc: subprocess.Popen[bytes], log: Path,
                count: int = 1) -> None:
    """Until *count* workers have heartbeats in the crawl (bounded)."""
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while client.zcard(CrawlKeys(crawl_id).workers) < count:
            assert proc.poll() is None, f"worker exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"worker not joined:\n{log.read_text()}"
            time.sleep(0.1)
    finally:
        client.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Path]]:
    """One scrape worker serving a crawl of this module: (crawl id, its log)."""
    crawl_id = "scr-" + uuid.uuid4().hex[:8]
    log = tmp_path_factory.mktemp("scrape") / "worker.log"
    proc = start_worker(redis_server.url, crawl_id, log)
    try:
        wait_joined(redis_server, crawl_id, proc, log)
        yield crawl_id, log
    finally:
        stop(proc)


def scrape(redis_url: str, crawl_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One scrape through :class:`ScrapeService`, on its own loop."""
    request = parse_request("v2", "scrape", body)
    assert isinstance(request, ScrapeRequest)

    async def main() -> dict[str, Any]:
        client = AsyncRedis.from_url(redis_url)
        service = ScrapeService(client, crawl_id)
        try:
            return await service.scrape(request)
        finally:
            await service.close()
            await client.aclose()
    return asyncio.run(main())


def every_value(client: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) for every key and every element of it, whatever its type."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            yield key, client.get(key) or b""
        elif kind == b"hash":
            for f, v in client.hgetall(key).items():
                yield key, f + b"=" + v
        elif kind == b"list":
            for v in client.lrange(key, 0, -1):
                yield key, v
        elif kind == b"set":
            for v in client.smembers(key):
                yield key, v
        elif kind == b"zset":
            for v in client.zrange(key, 0, -1):
                yield key, v
        yield key, key


def test_api_and_spider_agree() -> None:
    assert SCRAPE_SPIDER == scrape_spider.ScrapeSpider.name
    assert SCRAPE_META_KEY == scrape_spider.SCRAPE_META_KEY


@pytest.mark.slow
def test_scrape_returns_markdown_and_metadata(redis_url: str, served: tuple[str, Path],
                                              origin: Origin) -> None:
    crawl_id, _ = served
    doc = scrape(redis_url, crawl_id, {"url": origin.url + "/page",
                                        "formats": ["markdown", "html", "links"], "timeout": 20000})
    assert "# Hello scrape" in doc["markdown"]
    assert "Sidebar note" not in doc["markdown"]  # only the main content (the default)
    assert "<h1>Hello scrape</h1>" in doc["html"]
    assert origin.url + "/other" in doc["links"]
    meta = doc["metadata"]
    assert meta["title"] == "Scrape me" and meta["description"] == "A page for scrape tests"
    assert meta["statusCode"] == 200 and meta["sourceURL"] == origin.url + "/page"
    assert meta["language"] == "en" and meta["scrapeId"]
    whole = scrape(redis_url, crawl_id, {"url": origin.url + "/page", "onlyMainContent": False,
                                          "timeout": 20000})
    assert "Sidebar note" in whole["markdown"] and "html" not in whole
    gone = scrape(redis_url, crawl_id, {"url": origin.url + "/gone", "timeout": 20000})
    assert gone["metadata"]["statusCode"] == 404 and "nothing here" in gone["markdown"]


@pytest.mark.slow
def test_the_same_url_twice_is_fetched_twice(redis_url: str, served: tuple[str, Path],
                                             origin: Origin) -> None:
    crawl_id, _ = served
    path = f"/page?twice={uuid.uuid4().hex[:6]}"
    for _ in range(2):
        doc = scrape(redis_url, crawl_id, {"url": origin.url + path, "timeout": 20000})
        assert "Hello scrape" in doc["markdown"]
    assert origin.count(path) == 2


@pytest.mark.slow
def test_headers_reach_the_site_and_stay_out_of_redis(redis_server: RedisServer,
                                                      served: tuple[str, Path],
                                                      origin: Origin) -> None:
    crawl_id, _ = served
    secret = "tok-" + uuid.uuid4().hex
    path = f"/echo?h={uuid.uuid4().hex[:6]}"
    doc = scrape(redis_server.url, crawl_id, {"url": origin.url + path, "timeout": 20000,
                                               "headers": {"X-Scrape-Secret": secret}})
    assert f"secret={secret}" in doc["markdown"]
    assert [h["x-scrape-secret"] for h in origin.headers_of(path)] == [secret]
    client = redis_server.client()
    try:
        leaks = [key for key, value in every_value(client) if secret.encode() in value]
    finally:
        client.close()
    assert not leaks, f"the header value is in Redis under {leaks}"


def test_no_worker_times_out_within_the_timeout(redis_server: RedisServer, origin: Origin) -> None:
    crawl_id = "scr-none-" + uuid.uuid4().hex[:6]
    started = time.monotonic()
    with pytest.raises(ScrapeTimeout, match="timed out after 1000 ms"):
        scrape(redis_server.url, crawl_id, {"url": origin.url + "/page", "timeout": 1000,
                                             "headers": {"X-Scrape-Secret": "never-stored"}})
    assert 0.9 < time.monotonic() - started < 2.5
    client = redis_server.client()
    try:
        keys = CrawlKeys(crawl_id)
        assert not list(client.scan_iter(keys.prefix + "ticket:*"))
        assert not list(client.scan_iter(keys.prefix + "reply:*"))
        assert not [k for k, v in every_value(client) if b"never-stored" in v]
    finally:
        client.close()


@pytest.mark.slow
def test_a_worker_killed_mid_scrape_is_replaced_and_the_reply_comes_once(
        redis_server: RedisServer, origin: Origin, tmp_path: Path) -> None:
    crawl_id = "scr-kill-" + uuid.uuid4().hex[:6]
    path = f"/slow?s=3&k={uuid.uuid4().hex[:6]}"
    stale = f"/page?stale={uuid.uuid4().hex[:6]}"
    with pytest.raises(ScrapeTimeout):  # left in the frontier by a caller that gave up
        scrape(redis_server.url, crawl_id, {"url": origin.url + stale, "timeout": 300})
    first = start_worker(redis_server.url, crawl_id, tmp_path / "a.log")
    second: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["doc"] = scrape(redis_server.url, crawl_id,
                                   {"url": origin.url + path, "timeout": 45000})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc!r}"

    caller = threading.Thread(target=run)
    try:
        wait_joined(redis_server, crawl_id, first, tmp_path / "a.log")
        caller.start()
        deadline = time.monotonic() + 20
        while origin.count(path) < 1:  # the first worker is fetching the slow page
            assert time.monotonic() < deadline, (tmp_path / "a.log").read_text()
            time.sleep(0.02)
        first.kill()
        first.wait(10)
        second = start_worker(redis_server.url, crawl_id, tmp_path / "b.log")
        caller.join(60)
        assert not caller.is_alive(), (tmp_path / "b.log").read_text()
        assert "error" not in result, result.get("error")
        assert "slow page done" in result["doc"]["markdown"]
        assert origin.count(path) == 2  # fetched again by the second worker
        client = redis_server.client()
        try:
            keys = CrawlKeys(crawl_id)
            assert not list(client.scan_iter(keys.prefix + "reply:*"))  # taken, then deleted
            assert client.hlen(keys.leases) == 0 and client.zcard(keys.queue) == 0
            # the stale request was leased and acknowledged, never fetched: nobody waited
            assert int(client.hget(keys.stats, "acked") or 0) == 2
            assert origin.count(stale) == 0
            # service mode: idle with an empty frontier, the worker stays and the crawl runs
            time.sleep(1.5)
            assert second.poll() is None and client.hget(keys.meta, "state") == b"running"
            client.hset(keys.meta, "state", "cancelled")  # what `statecrawl cancel` does
            assert second.wait(20) == 0, (tmp_path / "b.log").read_text()
        finally:
            client.close()
    finally:
        stop(first)
        if second is not None:
            stop(second)


def start_cli_worker(redis_url: str, crawl_id: str, tmp: Path) -> subprocess.Popen[bytes]:
    """``statecrawl worker --serve-scrapes CRAWL_ID`` (the CLI's way to start a scrape worker)."""
    log = tmp / "cli-worker.log"
    env = worker_env(redis_url, STATECRAWL_NET_ALLOW="127.0.0.1")  # the CLI turns the guard on
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "statecrawl.cli", "worker", "--serve-scrapes", crawl_id,
             "--redis-url", redis_url, "--out", str(tmp / "out")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_firecrawl_sdk_scrapes_through_serve_and_a_cli_worker(
        redis_server: RedisServer, origin: Origin, tmp_path: Path) -> None:
    from firecrawl import Firecrawl

    from tests.api._serve import http, serve

    crawl_id = "scr-sdk-" + uuid.uuid4().hex[:6]
    worker = start_cli_worker(redis_server.url, crawl_id, tmp_path)
    try:
        wait_joined(redis_server, crawl_id, worker, tmp_path / "cli-worker.log")
        with serve(redis_server.url, tmp_path,
                   env={"STATECRAWL_API_SCRAPE_CRAWL": crawl_id}) as api:
            doc = Firecrawl(api_url=api.url).scrape(origin.url + "/page",
                                                    formats=["markdown", "html", "links"])
            assert doc.markdown is not None and "# Hello scrape" in doc.markdown
            assert doc.html is not None and "<h1>Hello scrape</h1>" in doc.html
            assert doc.links is not None and origin.url + "/other" in doc.links
            assert doc.metadata is not None and doc.metadata.status_code == 200
            assert doc.metadata.title == "Scrape me"
            status, body, _ = http("POST", api.url + "/v1/scrape",
                                   {"url": origin.url + "/page", "formats": ["markdown"]},
                                   timeout=40)
            assert status == 200 and body["success"] is True
            assert "# Hello scrape" in body["data"]["markdown"]
            status, body, _ = http("POST", api.url + "/v2/scrape",
                                   {"url": "http://127.0.0.1:9/", "timeout": 15000}, timeout=40)
            assert status == 500 and body["success"] is False and body["code"] == "SCRAPE_FAILED"
            # the CLI's worker runs with the net guard: a private or metadata address is refused
            for target, why in (("http://10.1.2.3/", "10.1.2.3 is private"),
                                ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata address"),
                                (origin.url.replace("127.0.0.1", "127.0.0.2") + "/page", "127.0.0.2 is loopback")):
                status, body, _ = http("POST", api.url + "/v2/scrape", {"url": target, "timeout": 15000},
                                       timeout=40)
                assert status == 500 and body["code"] == "SCRAPE_FAILED", body
                assert "AddressRefused" in body["error"] and why in body["error"], body
    finally:
        stop(worker)
    assert worker.returncode in (0, 128 + 15), (tmp_path / "cli-worker.log").read_text()


@pytest.mark.slow
def test_serve_answers_408_when_no_worker_serves_scrapes(redis_server: RedisServer,
                                                         origin: Origin, tmp_path: Path) -> None:
    from tests.api._serve import http, serve

    crawl_id = "scr-408-" + uuid.uuid4().hex[:6]
    with serve(redis_server.url, tmp_path, env={"STATECRAWL_API_SCRAPE_CRAWL": crawl_id}) as api:
        started = time.monotonic()
        status, body, _ = http("POST", api.url + "/v2/scrape",
                               {"url": origin.url + "/page", "timeout": 1500}, timeout=20)
        assert time.monotonic() - started < 5
    assert status == 408 and body == {"success": False, "code": "SCRAPE_TIMEOUT",
                                      "error": body["error"]}
    assert "timed out after 1500 ms" in body["error"]


@pytest.mark.slow
def test_serve_on_the_embedded_redis_runs_a_scrape_worker_itself(origin: Origin,
                                                                 tmp_path: Path) -> None:
    """``statecrawl serve`` alone (no Redis URL) is a working API, scrapes and crawls: one command."""
    from firecrawl import Firecrawl

    from statecrawl.cli.main import main as cli
    from tests.api._serve import http, serve_env
    from tests.conftest import free_port

    data, port = tmp_path / "data", free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statecrawl.cli", "serve", "--data-dir", str(data),
             "--port", str(port)], cwd=ROOT, env=serve_env(), stdout=out,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if http("GET", url + "/openapi.json", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        doc = Firecrawl(api_url=url).scrape(origin.url + "/page", formats=["markdown"],
                                            timeout=40000)
        assert doc.markdown is not None and "# Hello scrape" in doc.markdown
        job = Firecrawl(api_url=url).crawl(origin.url + "/page", limit=3, poll_interval=1,
                                           timeout=90)  # run by the job workers serve started
        assert job.status == "completed" and job.data, job
        proc.send_signal(15)
        assert proc.wait(40) == 0, log.read_text()
        output = log.read_text()
        assert "1 scrape worker serving crawl api-scrape" in output and "API stopped" in output
        assert "crawl jobs served, 2 at once" in output
        assert (data / "logs" / "scrape-worker-1.log").exists()
        assert f"job {job.id} is completed" in (data / "logs" / "job-workers.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        cli(["redis", "stop", "--data-dir", str(data)])


def test_the_scrape_spider_refuses_to_run_without_the_net_guard(redis_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(redis_server.url, tmp_path / "out", SCRAPY_SETTINGS_MODULE="statecrawl.cli.worker_settings")
    result = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "scrape", "-a", "crawl_id=scr-noguard"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "run it with STATECRAWL_NET_GUARD=true" in result.stderr
