"""Crawl and batch-scrape jobs, run by workers, driven through the unmodified firecrawl-py SDK.

Real processes throughout: a private redis-server for this module (so no job
of another test is picked up), a local demo site, ``statecrawl serve`` (one
scrape worker) and ``statecrawl worker --jobs 2`` (job workers with the net
guard on, allowed to reach 127.0.0.1 only). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from firecrawl import Firecrawl
from firecrawl.v1.client import V1FirecrawlApp

from statecrawl.demo.site import DemoSite
from tests.api._serve import Serve, http, serve, serve_env
from tests.conftest import ROOT, RedisServer, free_port

WAIT = 120  # seconds any one job may take here


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("jobs-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    with DemoSite(pages=140) as s:
        yield s


def start_job_workers(redis_url: str, log: Path, slots: int = 2) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "statecrawl.cli", "worker", "--jobs", str(slots), "--redis-url",
             redis_url, "--out", str(log.parent / "job-out")],
            cwd=ROOT, env=serve_env(), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("the process did not stop on SIGTERM") from None


@pytest.fixture(scope="module")
def fleet(private_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("jobs")
    jobs = start_job_workers(private_redis.url, tmp / "jobs.log")
    try:
        with serve(private_redis.url, tmp, "--scrape-workers", "1") as api:
            yield api
    finally:
        assert stop(jobs) in (0, 128 + signal.SIGTERM), (tmp / "jobs.log").read_text()[-3000:]


@pytest.fixture
def v2(fleet: Serve) -> Firecrawl:
    return Firecrawl(api_key="fc-test", api_url=fleet.url)


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url) or "/"


def sources(documents: list[Any]) -> list[str]:
    return [path_of(d.metadata.source_url) for d in documents]


def test_a_crawl_through_the_sdk_has_every_page_once(v2: Firecrawl, site: DemoSite) -> None:
    job = v2.crawl(site.url + "/", limit=1000, poll_interval=1, timeout=WAIT)
    assert job.status == "completed", job
    paths = sources(job.data)
    assert len(job.data) > 100  # the SDK followed `next` past the first status page
    assert len(paths) == len(set(paths)) == job.completed == job.total
    assert {path_of(u) for u in site.page_urls()} <= set(paths)
    assert "/private/secret.html" not in paths and "/redirect-in" not in paths
    by_path = {path_of(d.metadata.source_url): d for d in job.data}
    assert by_path["/missing.html"].metadata.status_code == 404
    assert by_path["/page/1.html"].markdown and by_path["/page/1.html"].metadata.status_code == 200
    errors = v2.get_crawl_errors(job.id)
    assert [path_of(u) for u in errors.robots_blocked] == ["/private/secret.html"]
    assert job.credits_used == len(job.data)


def test_crawl_options_limit_depth_and_paths(v2: Firecrawl, site: DemoSite) -> None:
    start = site.url + "/"
    limited = v2.crawl(start, limit=5, poll_interval=1, timeout=WAIT)
    assert limited.status == "completed" and 1 <= len(limited.data) <= 5, sources(limited.data)
    shallow = v2.crawl(start, max_discovery_depth=0, poll_interval=1, timeout=WAIT)
    assert sources(shallow.data) == ["/"]
    included = v2.crawl(start, include_paths=[r"^/page/"], sitemap="skip", poll_interval=1,
                        timeout=WAIT)
    assert len(included.data) > 100
    assert {p for p in sources(included.data) if not p.startswith("/page/")} == {"/"}
    excluded = v2.crawl(start, exclude_paths=[r"^/page/"], poll_interval=1, timeout=WAIT)
    assert excluded.data and not [p for p in sources(excluded.data) if p.startswith("/page/")]
    assert "/" in sources(excluded.data)
    # crawlEntireDomain false (the default): only URLs under the start URL's path
    child = v2.crawl(site.url + "/page/", crawl_entire_domain=False, limit=20, poll_interval=1,
                     timeout=WAIT)
    assert all(p.startswith("/page/") for p in sources(child.data)), sources(child.data)


def test_cancel_stops_the_crawl_and_a_second_cancel_is_refused(
        fleet: Serve, v2: Firecrawl, private_redis: RedisServer) -> None:
    with DemoSite(pages=400, delay=0.05) as slow:
        started = v2.start_crawl(slow.url + "/", limit=400)
        deadline = time.monotonic() + WAIT
        while v2.get_crawl_status(started.id).completed < 3:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert v2.cancel_crawl(started.id) is True
        assert v2.get_crawl_status(started.id).status == "cancelled"
        assert v2.cancel_crawl(started.id) is False  # the API answers 409
        client = private_redis.client()
        try:  # the crawl itself is cancelled, so its workers stop
            assert client.hget(f"sc:{{{started.id}}}:meta", b"state") == b"cancelled"
            hits = sum(slow.hits.values())
            time.sleep(3)
            assert sum(slow.hits.values()) - hits < 40, "the workers went on fetching"
        finally:
            client.close()
    assert http("DELETE", f"{fleet.url}/v2/crawl/{started.id}")[0] == 409


def test_batch_scrape_with_a_replayed_idempotency_key(fleet: Serve, v2: Firecrawl, site: DemoSite) -> None:
    urls = [f"{site.url}/page/{n}.html" for n in range(1, 8)] + [site.url + "/missing.html",
                                                                "http://127.0.0.1:9/", "not a url"]
    key = f"batch-{uuid.uuid4()}"
    body = {"urls": urls, "formats": ["markdown", "links"], "ignoreInvalidURLs": True}
    first = http("POST", f"{fleet.url}/v2/batch/scrape", body, {"x-idempotency-key": key})
    again = http("POST", f"{fleet.url}/v2/batch/scrape", body, {"x-idempotency-key": key})
    assert first[0] == again[0] == 200 and first[1]["id"] == again[1]["id"], (first, again)
    assert first[1]["invalidURLs"] == ["not a url"]
    assert first[1]["url"] == f"{fleet.url}/v2/batch/scrape/{first[1]['id']}"
    deadline = time.monotonic() + WAIT
    while (job := v2.get_batch_scrape_status(first[1]["id"])).status == "scraping":
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job.status == "completed" and (job.total, job.completed) == (9, 9)
    paths = sources(job.data)
    assert sorted(paths) == sorted({path_of(u) for u in urls[:8]}), paths  # once each, :9 failed
    assert all(d.links for d in job.data if d.metadata.status_code == 200)
    status, errors, _ = http("GET", f"{fleet.url}/v2/batch/scrape/{first[1]['id']}/errors")
    assert status == 200 and [e["url"] for e in errors["errors"]] == ["http://127.0.0.1:9/"]
    # the SDK's own batch call, with its idempotency key
    done = v2.batch_scrape(urls[:2], formats=["markdown"], idempotency_key=key + "-sdk",
                           poll_interval=1, wait_timeout=WAIT)
    assert done.status == "completed" and sorted(sources(done.data)) == ["/page/1.html", "/page/2.html"]


def test_the_v1_sdk_crawls_checks_and_cancels(fleet: Serve, site: DemoSite) -> None:
    v1 = V1FirecrawlApp(api_key="fc-test", api_url=fleet.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the v1 client uses pydantic's .dict()
        v1_crawl(v1, site)


def v1_crawl(v1: V1FirecrawlApp, site: DemoSite) -> None:
    result = v1.crawl_url(site.url + "/", limit=10, poll_interval=1)
    assert result.status == "completed" and 1 <= len(result.data) <= 10
    started = v1.async_crawl_url(site.url + "/", limit=50)
    assert started.success and started.id
    assert v1.check_crawl_status(started.id).status in ("scraping", "completed")
    cancelled = v1.cancel_crawl(started.id)  # may come after the end: then the API says 409
    assert cancelled.get("status") == "cancelled" or "already" in str(cancelled)
    page = v1.scrape_url(site.url + "/page/2.html", formats=["markdown", "links"])
    assert page.markdown and page.metadata["statusCode"] == 200 and page.links
    batch = v1.batch_scrape_urls([site.url + "/page/3.html", site.url + "/page/4.html"],
                                 formats=["markdown"], poll_interval=1)
    assert batch.status == "completed" and len(batch.data) == 2


def test_a_crawl_of_a_private_address_fails_with_the_reason(v2: Firecrawl) -> None:
    job = v2.crawl("http://10.1.2.3/", limit=3, poll_interval=1, timeout=WAIT)
    assert job.status == "failed" and not job.data
    errors = v2.get_crawl_errors(job.id).errors
    assert len(errors) == 1 and "AddressRefused" in errors[0].error and "10.1.2.3" in errors[0].error


@pytest.mark.slow
def test_two_api_nodes_and_two_job_workers_survive_sigkills(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Polls alternate between two API processes; one of them and one job worker are SIGKILLed
    mid-crawl; the crawl completes through the other with every page once."""
    redis_server = RedisServer(free_port(), tmp_path_factory.mktemp("kill-redis")).start()
    logs = [tmp_path / "jobs-a.log", tmp_path / "jobs-b.log"]
    supervisors = [start_job_workers(redis_server.url, log, slots=1) for log in logs]
    try:
        with DemoSite(pages=400, delay=0.4) as slow, \
                serve(redis_server.url, tmp_path, "--scrape-workers", "0") as api_a, \
                serve(redis_server.url, tmp_path, "--scrape-workers", "0") as api_b:
            started = http("POST", f"{api_a.url}/v2/crawl", {"url": slow.url + "/", "limit": 1000})[1]
            job_id = started["id"]
            deadline = time.monotonic() + WAIT
            polls = 0
            while True:  # alternate between the nodes until both job workers run and pages come in
                node = (api_a, api_b)[polls % 2]
                status, body, _ = http("GET", f"{node.url}/v2/crawl/{job_id}")
                assert status == 200 and body["status"] == "scraping", body
                polls += 1
                pids = [worker_pid(log, job_id) for log in logs]
                if body["completed"] >= 40 and all(pids) and polls >= 4:
                    break
                assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
                time.sleep(0.25)
            os.kill(pids[0], signal.SIGKILL)  # one job worker (its supervisor starts another)
            api_a.proc.kill()  # and one API process, mid-crawl
            api_a.proc.wait(10)
            v2 = Firecrawl(api_key="fc-test", api_url=api_b.url)
            while (job := v2.get_crawl_status(job_id)).status == "scraping":
                assert time.monotonic() < deadline + WAIT, job.completed
                time.sleep(1)
            assert job.status == "completed"
            paths = sources(job.data)
            assert len(paths) == len(set(paths)) == job.completed, "a page was kept twice"
            assert {path_of(u) for u in slow.page_urls()} <= set(paths), "a page was lost"
            assert "job " + job_id + ": worker exited with status -9" in logs[0].read_text()
    finally:
        for proc in supervisors:
            stop(proc)
        redis_server.stop()


def worker_pid(log: Path, job_id: str) -> int | None:
    """The pid of the last job worker a supervisor started for *job_id*, from its output."""
    found = re.findall(rf"job {job_id}: worker started \(pid (\d+)\)", log.read_text())
    return int(found[-1]) if found else None


def test_webhooks_of_a_crawl_and_a_batch_are_delivered_by_the_job_workers(
        fleet: Serve, v2: Firecrawl, site: DemoSite) -> None:
    from tests.api.test_webhooks import serving

    with serving() as receiver:
        hook = {"url": receiver.url(), "metadata": {"run": "e2e"},
                "events": ["started", "page", "completed", "failed"]}
        job = v2.crawl(site.url + "/", limit=6, webhook=hook, poll_interval=1, timeout=WAIT)
        batch = http("POST", f"{fleet.url}/v2/batch/scrape",
                     {"urls": [site.url + "/page/1.html", "http://127.0.0.1:9/"], "webhook": receiver.url()})[1]
        deadline = time.monotonic() + 60
        while True:
            bodies = receiver.bodies()
            types = {(b["id"], b["type"]) for b in bodies}
            if {(job.id, "crawl.completed"), (batch["id"], "batch_scrape.completed")} <= types:
                break
            assert time.monotonic() < deadline, bodies
            time.sleep(0.3)
    crawl = [b for b in bodies if b["id"] == job.id]
    assert crawl[0]["type"] == "crawl.started" and crawl[-1]["type"] == "crawl.completed"
    pages = [b for b in crawl if b["type"] == "crawl.page"]
    assert len(pages) == len(job.data) and all(b["metadata"] == {"run": "e2e"} for b in crawl)
    assert sorted(b["data"][0]["metadata"]["sourceURL"] for b in pages) == sorted(
        d.metadata.source_url for d in job.data)
    kinds = sorted(b["type"] for b in bodies if b["id"] == batch["id"])
    assert kinds == ["batch_scrape.completed", "batch_scrape.page", "batch_scrape.page",
                     "batch_scrape.started"]
    failed_page = [b for b in bodies if b["id"] == batch["id"] and b["type"] == "batch_scrape.page"
                   and not b["success"]]
    assert len(failed_page) == 1 and "127.0.0.1:9" in json.dumps(failed_page[0]) or \
        "Connection" in failed_page[0]["error"]


def test_crawl_headers_reach_the_site_and_are_kept_nowhere(
        v2: Firecrawl, private_redis: RedisServer) -> None:
    from tests.api._origin import Origin

    secret = "hdr-" + uuid.uuid4().hex
    with Origin() as origin:
        job = v2.crawl(origin.url + "/echo", max_discovery_depth=0,
                       scrape_options={"headers": {"X-Scrape-Secret": secret}},
                       poll_interval=1, timeout=WAIT)
        assert job.status == "completed" and len(job.data) == 1
        assert f"secret={secret}" in job.data[0].markdown
        assert [h.get("x-scrape-secret") for h in origin.headers_of("/echo")] == [secret]
    client = private_redis.client()
    try:  # the job has ended: its sealed headers are gone, and no key holds them
        assert client.get(f"sc:{{{job.id}}}:job:secret") is None
        for key in client.scan_iter(f"sc:{{{job.id}}}:*"):
            kind = client.type(key)
            value = client.dump(key)
            assert secret.encode() not in (value or b""), (key, kind)
    finally:
        client.close()


def test_a_finished_crawl_jobs_crawl_keys_expire_with_the_job(
        v2: Firecrawl, site: DemoSite, private_redis: RedisServer) -> None:
    job = v2.crawl(site.url + "/", limit=5, poll_interval=1, timeout=WAIT)
    assert job.status == "completed"
    client = private_redis.client()
    try:
        deadline = time.monotonic() + 30  # until the worker has left (its supervisor reaped it)
        while client.zcard(f"sc:{{{job.id}}}:workers") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # POLL s for the supervisor to notice
        expires = int(client.hget(f"sc:{{{job.id}}}:job", "expires_at"))
        keys = list(client.scan_iter(f"sc:{{{job.id}}}:*"))
        crawl_keys = [k for k in keys if b":job" not in k and b":ts:" not in k]
        assert len(crawl_keys) >= 5  # meta, stats, digests, tokens, workers, a cookie jar ...
        assert [k for k in crawl_keys if client.pexpiretime(k) != expires] == []
        buckets = [k for k in keys if b":ts:" in k]  # rolling counters: an hour, never longer
        assert buckets and [k for k in buckets if not 0 < client.pexpiretime(k) <= expires] == []
    finally:
        client.close()


def test_a_crawls_delay_and_max_concurrency_hold_for_all_its_workers(
        v2: Firecrawl, private_redis: RedisServer) -> None:
    from tests._servers import Reply, ScriptedServer, gaps, links_page

    with ScriptedServer({"/": [links_page(3)], "/robots.txt": [Reply(404)]}) as origin:
        job = v2.crawl(origin.url + "/", delay=1, max_concurrency=1, poll_interval=1,
                       timeout=WAIT)  # the SDK takes whole seconds
        times = [t for t, path in origin.times if path != "/robots.txt"]
    assert job.status == "completed" and len(job.data) == 4
    assert len(times) == 4 and min(gaps(times)) >= 1 - 0.005, sorted(gaps(times))[:2]
    client = private_redis.client()
    try:  # the crawl's budget, kept with its keys, which expire with the job
        hosts = f"sc:{{{job.id}}}:hosts"
        assert client.hmget(hosts, "*|d", "*|c") == [b"1000", b"1"]
        deadline = time.monotonic() + 30
        while client.pexpiretime(hosts) < 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        expires = int(client.hget(f"sc:{{{job.id}}}:job", "expires_at"))
        assert client.pexpiretime(hosts) == expires
    finally:
        client.close()
