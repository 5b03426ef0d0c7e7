"""A start URL that fails is an item with its error, never a silent empty crawl.

Scrapy's retry copy of a start request keeps ``is_start_request``; with
``STATECRAWL_DEDUPE_START_REQUESTS`` the retry was dropped as a duplicate of
the start request itself, so the start URL got no item and the crawl ended
"finished: 0 pages". Each way a start URL can fail is crawled here with a
real ``scrapy crawl site`` against the session's Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests._servers import HANG, Reply, ScriptedServer
from tests.conftest import RedisServer, free_port, scrapy_crawl, worker_env

from statecrawl.frontier.item_codec import load_item


def run(server: RedisServer, url: str, crawl_id: str, out: Path, *settings: str) -> dict[str, Any]:
    args = ["-a", f"url={url}", "-a", f"crawl_id={crawl_id}"]
    for setting in settings:
        args += ["-s", setting]
    result = scrapy_crawl(args, worker_env(server.url, out), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    client = server.client()
    items = {k.decode(): load_item(v) for k, v in client.hgetall(f"sc:{{{crawl_id}}}:items").items()}
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"sc:{{{crawl_id}}}:stats").items()}
    assert client.hget(f"sc:{{{crawl_id}}}:meta", "state") == b"finished"
    return {"items": items, "stats": stats}


def test_refused_port_is_an_error_item_after_its_retries(redis_server: RedisServer, crawl_id: str,
                                                         tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    got = run(redis_server, url, crawl_id, tmp_path, "RETRY_TIMES=2")
    assert list(got["items"]) == [url]
    assert got["items"][url]["error"]["type"] == "DownloadConnectionRefusedError"
    assert got["stats"]["retried"] >= 2  # the start URL's two retries were enqueued, not dropped


def test_unresolvable_host_is_an_error_item(redis_server: RedisServer, crawl_id: str,
                                            tmp_path: Path) -> None:
    url = "http://nonexistent.invalid/"
    got = run(redis_server, url, crawl_id, tmp_path, "RETRY_TIMES=1")
    assert list(got["items"]) == [url]
    assert got["items"][url]["error"]["type"] in ("CannotResolveHostError", "DNSLookupError")
    assert "nonexistent.invalid" in got["items"][url]["error"]["message"]


def test_server_that_never_answers_is_a_timeout_item(redis_server: RedisServer, crawl_id: str,
                                                     tmp_path: Path) -> None:
    with ScriptedServer({"*": [HANG]}) as server:
        url = server.url + "/"
        got = run(redis_server, url, crawl_id, tmp_path, "RETRY_TIMES=1", "DOWNLOAD_TIMEOUT=1")
        assert server.hits["/"] == 2  # the first try and its retry
    assert list(got["items"]) == [url]
    assert "Timeout" in got["items"][url]["error"]["type"]


def test_one_503_then_the_page_is_retried_and_crawled(redis_server: RedisServer, crawl_id: str,
                                                      tmp_path: Path) -> None:
    page = b'<html><head><title>Home</title></head><body><p>home</p><a href="/a">a</a></body></html>'
    with ScriptedServer({"/": [Reply(503, b"busy"), Reply(200, page)], "/a": [Reply()]}) as server:
        got = run(redis_server, server.url + "/", crawl_id, tmp_path, "RETRY_TIMES=2")
        assert server.hits["/"] == 2
    home = got["items"][server.url + "/"]
    assert (home["status"], home["error"], home["title"]) == (200, None, "Home")
    assert got["items"][server.url + "/a"]["status"] == 200  # the crawl went on from it


@pytest.mark.slow
def test_two_workers_fetch_the_start_url_once(redis_server: RedisServer, crawl_id: str,
                                              tmp_path: Path) -> None:
    """Retries are kept, but start requests are still deduplicated across workers."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    with ScriptedServer({"/": [Reply()]}) as server:
        args = ["-a", f"url={server.url}/", "-a", f"crawl_id={crawl_id}"]
        procs = [subprocess.Popen([sys.executable, "-m", "scrapy", "crawl", "site", *args], cwd=ROOT,
                                  env=worker_env(redis_server.url, tmp_path / str(i)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(2)]
        for proc in procs:
            assert proc.wait(120) == 0
        assert server.hits["/"] == 1
