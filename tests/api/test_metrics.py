"""``GET /metrics`` on a real ``statecrawl serve``, and ``statecrawl metrics`` as a real process.

The crawl is a real one (the demo site, one worker) in a Redis database of this module's
own (db 10 of the session's server, emptied first); the text is parsed with
prometheus_client's parser and checked against the crawl's stats in Redis.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from statecrawl.cli.metrics import DEFAULT_LISTEN, parse_listen
from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.keys import CrawlKeys
from tests.api._serve import http, serve, serve_env
from tests.conftest import ROOT, RedisServer, free_port, scrapy_crawl, worker_env

DB = 10
ENV = {"STATECRAWL_METRICS_MAX_CRAWLS": "1000"}


@pytest.fixture(scope="module")
def crawled(redis_server: RedisServer, site: DemoSite,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """(Redis URL of the module's database, the crawl id, its acked pages)."""
    client = redis.Redis(port=redis_server.port, db=DB)
    client.flushdb()
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    crawl_id = "metrics-api"
    result = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                           "-a", "limit=20", "-s", "RETRY_TIMES=0"],
                          worker_env(url, tmp_path_factory.mktemp("out")))
    assert result.returncode == 0, result.stdout[-2000:]  # type: ignore[union-attr]
    acked = int(client.hget(CrawlKeys(crawl_id).stats, "acked") or 0)
    client.close()
    assert acked > 5
    return url, crawl_id, acked


def parsed(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return out


def pages(text: str, crawl_id: str) -> float:
    return parsed(text)["statecrawl_pages_total"][frozenset({"crawl": crawl_id}.items())]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_metrics_need_the_api_key_and_match_redis(crawled: tuple[str, str, int],
                                                  tmp_path: Path) -> None:
    url, crawl_id, acked = crawled
    with serve(url, tmp_path, "--api-key", "k-metrics", env=ENV) as api:
        status, body, _ = http("GET", f"{api.url}/metrics")
        assert status == 401 and body == {"success": False, "error": "Unauthorized"}
        assert http("GET", f"{api.url}/metrics", headers=bearer("wrong"))[0] == 401
        status, text, head = http("GET", f"{api.url}/metrics", headers=bearer("k-metrics"))
    assert status == 200 and head["Content-Type"].startswith("text/plain; version=0.0.4")
    assert pages(text, crawl_id) == acked
    samples = parsed(text)
    assert samples["statecrawl_crawls"] == {frozenset({"state": "finished"}.items()): 1.0}
    assert samples["statecrawl_metrics_crawl_errors"] == {frozenset(): 0.0}


def test_metrics_open_needs_no_key_and_is_never_rate_limited(crawled: tuple[str, str, int],
                                                             tmp_path: Path) -> None:
    url, crawl_id, acked = crawled
    with serve(url, tmp_path, "--api-key", "k-metrics", "--metrics-open", "--rate-limit", "1",
               env=ENV) as api:
        for _ in range(3):  # a rate of 1/min would refuse the second if it counted
            status, text, _head = http("GET", f"{api.url}/metrics")
            assert status == 200 and pages(text, crawl_id) == acked
        assert http("GET", f"{api.url}/v2/crawl/active")[0] == 401  # only /metrics is open
    assert "/metrics open without a key" in api.output()


def test_redis_down_is_a_503_with_one_line_then_metrics_again(tmp_path: Path) -> None:
    own = RedisServer(free_port(), tmp_path).start()
    try:
        with serve(own.url, tmp_path) as api:
            status, text, _ = http("GET", f"{api.url}/metrics")
            assert status == 200 and "statecrawl_redis_used_memory_bytes" in text
            own.stop("kill")
            started = time.monotonic()
            status, text, head = http("GET", f"{api.url}/metrics", timeout=30)
            assert status == 503 and time.monotonic() - started < 15
            assert text.startswith("statecrawl metrics unavailable: Redis did not answer")
            assert text.count("\n") == 1 and head["Retry-After"] == "5"
            own.start()  # same port: the next scrape reads it again
            assert http("GET", f"{api.url}/metrics", timeout=30)[0] == 200
    finally:
        own.stop()


def exporter(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "statecrawl.cli", "metrics", "--redis-url", url, *args]


def wait_ready(proc: subprocess.Popen[bytes], base: str, headers: Mapping[str, str],
               log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if http("GET", f"{base}/metrics", headers=headers, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        assert proc.poll() is None, f"exporter exited {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"exporter not ready in 30 s: {log.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path).start()
    yield server
    server.stop()


def test_the_exporter_serves_the_same_text_and_503_when_redis_goes(
        crawled: tuple[str, str, int], own_redis: RedisServer, tmp_path: Path) -> None:
    url, crawl_id, acked = crawled
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(exporter(url, "--listen", f"127.0.0.1:{port}", "--api-key", "k1",
                                         "--max-crawls", "1000"),
                                cwd=ROOT, env=serve_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, base, bearer("k1"), log)
        assert http("GET", f"{base}/metrics")[0] == 401
        status, text, _ = http("GET", f"{base}/metrics", headers=bearer("k1"))
        assert status == 200 and pages(text, crawl_id) == acked
        assert http("GET", f"{base}/v2/crawl/active", headers=bearer("k1"))[0] == 404  # /metrics alone
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log.read_text()

    port = free_port()  # on a Redis that goes away
    with log.open("wb") as out:
        proc = subprocess.Popen(exporter(own_redis.url, "--listen", str(port)), cwd=ROOT,
                                env=serve_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", {}, log)
        own_redis.stop("kill")
        status, text, _ = http("GET", f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert status == 503 and text.startswith("statecrawl metrics unavailable: ")
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_exporter_once_prints_the_text(crawled: tuple[str, str, int]) -> None:
    url, crawl_id, acked = crawled
    done = subprocess.run(exporter(url, "--once", "--max-crawls", "1000"), cwd=ROOT,
                          env=serve_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert pages(done.stdout, crawl_id) == acked


def test_the_exporters_bad_listen_and_taken_port_are_one_line(crawled: tuple[str, str, int]) -> None:
    url = crawled[0]
    for bad in ("nonsense", "127.0.0.1:99999", "::1:9108", "host:"):
        done = subprocess.run(exporter(url, "--listen", bad), cwd=ROOT, env=serve_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and f"statecrawl: error: --listen {bad!r}: expected" \
            in done.stderr, done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(exporter(url, "--listen", f"127.0.0.1:{port}"), cwd=ROOT,
                              env=serve_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "the address is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_listen_addresses_and_the_loopback_default() -> None:
    assert parse_listen(DEFAULT_LISTEN) == ("127.0.0.1", 9108)
    assert parse_listen("9200") == ("127.0.0.1", 9200)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ConfigError):
        parse_listen("127.0.0.1:0")
