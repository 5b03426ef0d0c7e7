"""One politeness budget per host for the whole fleet, seen from the servers' side.

Real worker processes share one crawl on a private redis-server; the sites are
:class:`tests._servers.ScriptedServer` instances recording when each request
arrived, so the tests check the rate a site actually saw.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from statecrawl import cli

from tests._servers import Reply, ScriptedServer, gaps, links_page
from tests.conftest import RedisServer, scrapy_crawl, worker_env

KEY = "sc:{{{}}}:{}"


def _workers(n: int, url: str, crawl_id: str, redis: RedisServer, tmp: Path,
             *settings: str) -> list[str]:
    args = ["-a", f"url={url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=3"]
    for s in settings:
        args += ["-s", s]
    procs = [scrapy_crawl(args, worker_env(redis.url, tmp / f"w{i}"), wait=False)
             for i in range(n)]
    logs = [p.communicate(timeout=240)[0] for p in procs]  # type: ignore[union-attr]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(log[-3000:] for log in logs)
    return logs


def _pages(tmp: Path, n: int) -> list[str]:
    return [json.loads(line)["url"] for i in range(n) for p in (tmp / f"w{i}").glob("pages-*.jsonl")
            for line in p.read_text().splitlines()]


@pytest.mark.parametrize("setting", ["STATECRAWL_HOST_DELAY", "DOWNLOAD_DELAY"])
def test_two_workers_keep_one_delay_between_requests_to_a_host(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path, setting: str) -> None:
    with ScriptedServer({"/": [links_page(14)], "/robots.txt": [Reply(404)]}) as site:
        logs = _workers(2, site.url, crawl_id, redis_server, tmp_path, f"{setting}=0.25")
        times = [t for t, path in site.times if path != "/robots.txt"]
    assert len(times) == 15
    urls = _pages(tmp_path, 2)
    assert len(urls) == len(set(urls)) == 15
    assert min(gaps(times)) >= 0.25 - 0.005, sorted(gaps(times))[:3]
    assert any("is polite" in log for log in logs)
    client = redis_server.client()
    assert client.hget(KEY.format(crawl_id, "meta"), "polite") == b"1"
    assert client.zcard(KEY.format(crawl_id, "hostq")) == 0
    assert client.hget(KEY.format(crawl_id, "hosts"), "127.0.0.1|n") is None  # none in flight


def test_a_429_with_retry_after_holds_every_worker_off(redis_server: RedisServer, crawl_id: str,
                                                       tmp_path: Path) -> None:
    script = {"/": [links_page(16)], "/robots.txt": [Reply(404)],
              "/p/2": [Reply(429, b"slow down", {"Retry-After": "2"}), Reply()]}
    with ScriptedServer(script) as site:  # type: ignore[arg-type]
        logs = _workers(2, site.url, crawl_id, redis_server, tmp_path,
                        "STATECRAWL_HOST_DELAY=0.05")
        times = sorted(t for t, path in site.times if path != "/robots.txt")
        refused = next(t for t, path in site.times if path == "/p/2")
    after = [t - refused for t in times if t > refused]
    assert after and min(after) >= 2.0 - 0.01, after[:3]
    assert sorted(_pages(tmp_path, 2)) == sorted({f"{site.url}/", *(f"{site.url}/p/{i}"
                                                                    for i in range(16))})
    assert any("answered 429/503" in log for log in logs)


def test_at_most_n_requests_of_a_host_in_flight_across_workers(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    script = {"/": [links_page(12)], "/robots.txt": [Reply(404)], "*": [Reply(delay=0.3)]}
    with ScriptedServer(script) as site:  # type: ignore[arg-type]
        _workers(2, site.url, crawl_id, redis_server, tmp_path,
                 "STATECRAWL_HOST_CONCURRENCY=2", "CONCURRENT_REQUESTS=8")
        assert site.max_active == 2
    assert len(set(_pages(tmp_path, 2))) == 13


def test_robots_crawl_delay_is_kept_by_the_fleet(redis_server: RedisServer, crawl_id: str,
                                                 tmp_path: Path) -> None:
    robots = Reply(body=b"User-agent: *\nCrawl-delay: 0.3\n", headers={"Content-Type": "text/plain"})
    with ScriptedServer({"/": [links_page(8)], "/robots.txt": [robots]}) as site:
        _workers(2, site.url, crawl_id, redis_server, tmp_path, "STATECRAWL_POLITENESS=on")
        times = [t for t, path in site.times if path != "/robots.txt"]
    assert len(times) == 9
    assert min(gaps(times)) >= 0.3 - 0.005, sorted(gaps(times))[:3]
    assert redis_server.client().hget(KEY.format(crawl_id, "hosts"), "127.0.0.1|r") == b"300"


def test_a_killed_worker_neither_loses_pages_nor_breaks_the_budget(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedServer({"/": [links_page(30)], "/robots.txt": [Reply(404)]}) as site:
        args = ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                "-s", "STATECRAWL_HOST_DELAY=0.1", "-s", "STATECRAWL_WORKER_TIMEOUT=2"]
        procs = [scrapy_crawl(args, worker_env(redis_server.url, tmp_path / f"w{i}"), wait=False)
                 for i in range(2)]
        deadline = time.monotonic() + 60
        while len(site.times) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        out = procs[1].communicate(timeout=120)[0]  # type: ignore[union-attr]
        assert procs[1].returncode == 0, out[-3000:]
        times = [t for t, path in site.times if path != "/robots.txt"]
    assert min(gaps(times)) >= 0.1 - 0.005, sorted(gaps(times))[:3]
    client = redis_server.client()
    stored = {k.decode() for k in client.hkeys(KEY.format(crawl_id, "items"))}
    assert stored == {f"{site.url}/", *(f"{site.url}/p/{i}" for i in range(30))}
    assert client.hget(KEY.format(crawl_id, "hosts"), "127.0.0.1|n") is None  # none in flight

    # the budget, shown and changed by `statecrawl hosts`
    assert cli.main(["--redis-url", redis_server.url, "hosts", crawl_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["polite"] and report["delay"] == 0.1 and report["hosts"] == 1
    assert report["top"][0]["host"] == "127.0.0.1" and report["top"][0]["in_flight"] == 0
    assert cli.main(["--redis-url", redis_server.url, "hosts", crawl_id, "--host", "127.0.0.1",
                     "--delay", "2", "--concurrency", "3"]) == 0
    assert "override 2s" in capsys.readouterr().out
    assert client.hget(KEY.format(crawl_id, "hosts"), "127.0.0.1|c") == b"3"


def test_autothrottle_is_one_delay_per_host_for_the_fleet(redis_server: RedisServer, crawl_id: str,
                                                          tmp_path: Path) -> None:
    # every page takes 0.3 s: with a target concurrency of 1, AutoThrottle's rule moves the
    # host's delay from its 0.05 s start towards 0.3 s, from what both workers report
    script = {"/": [links_page(10)], "/robots.txt": [Reply(404)], "*": [Reply(delay=0.3)]}
    with ScriptedServer(script) as site:  # type: ignore[arg-type]
        logs = _workers(2, site.url, crawl_id, redis_server, tmp_path, "AUTOTHROTTLE_ENABLED=True",
                        "AUTOTHROTTLE_START_DELAY=0.05", "AUTOTHROTTLE_TARGET_CONCURRENCY=1")
    assert all("AutoThrottle on (target 1)" in log for log in logs)
    assert not any("scrapy.extensions.throttle.AutoThrottle" in log for log in logs)
    learnt = int(redis_server.client().hget(KEY.format(crawl_id, "hosts"), "127.0.0.1|a"))
    assert 150 <= learnt <= 320, learnt
    assert len(set(_pages(tmp_path, 2))) == 11


def test_statecrawl_crawl_delay_option_is_the_fleets_budget(redis_server: RedisServer,
                                                             crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"/": [links_page(6)], "/robots.txt": [Reply(404)]}) as site:
        code = cli.main(["--redis-url", redis_server.url, "crawl", site.url + "/", "--workers", "2",
                         "--delay", "0.2", "--host-concurrency", "1", "--crawl-id", crawl_id,
                         "--out", str(tmp_path / "out"), "--quiet"])
        times = [t for t, path in site.times if path != "/robots.txt"]
    assert code == 0 and len(times) == 7
    assert min(gaps(times)) >= 0.2 - 0.005, sorted(gaps(times))[:2]
    assert redis_server.client().hmget(KEY.format(crawl_id, "hosts"), "*|d", "*|c") == [
        b"200", b"1"]


def test_bad_budget_arguments_are_refused() -> None:
    from statecrawl.exceptions import ConfigError
    from statecrawl.spiders.site import SiteSpider

    spider = SiteSpider(url="http://a.test/", delay="0.25", host_concurrency="2")
    assert spider.host_budget == {"delay": 0.25, "concurrency": 2}
    assert SiteSpider(url="http://a.test/").host_budget == {}
    for bad in ({"delay": "soon"}, {"delay": "-1"}, {"host_concurrency": "two"}):
        with pytest.raises(ConfigError):
            SiteSpider(url="http://a.test/", **bad)
