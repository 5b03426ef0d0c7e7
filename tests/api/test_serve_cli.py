"""``statecrawl serve`` as a process: API keys, signals, a taken port, several API processes, Redis down.

Jobs are written with the JobStore directly (:func:`tests.api._serve.make_job`),
standing in for the executor that does not exist yet.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from firecrawl import Firecrawl

from tests.api._serve import http, make_job, serve, serve_command, serve_env
from tests.conftest import ROOT, RedisServer, free_port


def test_api_keys_guard_every_route_but_the_schema(redis_url: str, tmp_path: Path) -> None:
    job_id = make_job(redis_url, docs=3, status="completed")
    with serve(redis_url, tmp_path, "--api-key", "key-one",
               env={"STATECRAWL_API_KEYS": "ignored-when-options-given"}) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one"},
                        {"Authorization": "Bearer ignored-when-options-given"}):
            for method, path in (("GET", f"/v2/crawl/{job_id}"), ("POST", "/v2/crawl"),
                                 ("GET", "/v2/crawl/active"), ("DELETE", f"/v1/crawl/{job_id}")):
                status, body, head = http(method, api.url + path, {"url": "e.com"}, headers)
                assert (status, body) == (401, {"success": False, "error": "Unauthorized"}), (headers, path)
                assert head["www-authenticate"] == "Bearer"
        assert http("GET", f"{api.url}/openapi.json")[0] == 200
        status, body, _ = http("GET", f"{api.url}/v2/crawl/{job_id}",
                               headers={"Authorization": "bearer key-one"})
        assert status == 200 and len(body["data"]) == 3
        assert len(Firecrawl(api_key="key-one", api_url=api.url).get_crawl_status(job_id).data) == 3
    env = {"STATECRAWL_API_KEYS": " a-key , another ", "STATECRAWL_API_MAX_BODY": "100"}
    with serve(redis_url, tmp_path, env=env) as api:
        assert http("GET", f"{api.url}/v2/crawl/active")[0] == 401
        key = {"Authorization": "Bearer another"}
        assert http("GET", f"{api.url}/v2/crawl/active", headers=key)[0] == 200
        assert http("POST", f"{api.url}/v2/crawl", {"url": "e.com"}, key)[0] == 200
        assert http("POST", f"{api.url}/v2/map", {"url": "e.com/" + "x" * 100}, key)[0] == 413


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_cleanly(redis_url: str, tmp_path: Path, sig: int) -> None:
    with serve(redis_url, tmp_path) as api:
        assert api.stop(sig) == 0
        output = api.output()
    assert f"API listening on http://127.0.0.1:{api.port}" in output
    assert "scrape, map and batch scrape are served by scrape workers" in output
    assert "crawls by job workers (statecrawl worker --jobs N)" in output
    assert "API stopped" in output and "Traceback" not in output


def test_a_taken_port_is_one_clear_error(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(serve_command(redis_url, port), cwd=ROOT, env=serve_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert f"statecrawl: error: cannot listen on 127.0.0.1:{port}: the address is already in use" \
            in done.stderr
        assert "Traceback" not in done.stderr
        wide = subprocess.run(serve_command(redis_url, port, "--host", "0.0.0.0"), cwd=ROOT,
                              env=serve_env(), capture_output=True, text=True, timeout=60)
        assert wide.returncode == 1 and "warning: listening on 0.0.0.0 without API keys" in wide.stderr


def test_no_redis_is_one_clear_error() -> None:
    done = subprocess.run(serve_command(f"redis://127.0.0.1:{free_port()}/0", free_port()), cwd=ROOT,
                          env=serve_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "statecrawl: error: cannot reach Redis" in done.stderr


def test_redis_going_away_is_a_503_in_json(tmp_path: Path) -> None:
    own = RedisServer(free_port(), tmp_path).start()
    try:
        job_id = make_job(own.url, docs=2, status="completed")
        with serve(own.url, tmp_path) as api:
            assert http("GET", f"{api.url}/v2/crawl/{job_id}")[0] == 200
            own.stop("kill")
            started = time.monotonic()
            status, body, _ = http("GET", f"{api.url}/v2/crawl/{job_id}", timeout=30)
            assert status == 503 and body["success"] is False and body["code"] == "REDIS_UNAVAILABLE"
            assert "Redis" in body["error"] and time.monotonic() - started < 20
            assert http("DELETE", f"{api.url}/v2/crawl/{job_id}", timeout=30)[0] == 503
            own.start()  # same port, same AOF: the job is back, and so are the answers
            status, body, _ = http("GET", f"{api.url}/v2/crawl/{job_id}", timeout=30)
            assert status == 200 and len(body["data"]) == 2
    finally:
        own.stop()


@pytest.mark.slow
def test_two_servers_answer_alike_and_one_survives_the_other(redis_url: str, tmp_path: Path) -> None:
    job_id = make_job(redis_url, docs=450, status="completed")
    with serve(redis_url, tmp_path) as one, serve(redis_url, tmp_path, "--workers", "2") as two:
        pages = []
        url: str | None = f"/v2/crawl/{job_id}?limit=100"
        for turn in range(20):
            assert url is not None
            status, body, _ = http("GET", (one, two)[turn % 2].url + url)
            assert status == 200
            pages.append(body["data"])
            nxt = body.get("next")
            if nxt is None:
                break
            url = nxt.split(str((one, two)[turn % 2].port), 1)[1]  # the same path, to the other server
        assert [d["markdown"] for page in pages for d in page] == [f"page {i}" for i in range(450)]
        direct = [http("GET", f"{s.url}/v2/crawl/{job_id}?skip=200&limit=50")[1] for s in (one, two)]
        assert direct[0]["data"] == direct[1]["data"] and direct[0]["next"].endswith("skip=250&limit=50")

        running = make_job(redis_url, docs=120)
        client = Firecrawl(api_key="fc-x", api_url=one.url)
        assert len(client.get_crawl_status(running).data) == 120
        one.proc.send_signal(signal.SIGKILL)
        one.proc.wait(10)
        survivor = Firecrawl(api_key="fc-x", api_url=two.url)
        for _ in range(4):  # several requests: whichever of its two processes takes each one
            assert len(survivor.get_crawl_status(running).data) == 120
        assert survivor.cancel_crawl(running) is True
        assert survivor.get_crawl_status(running).status == "cancelled"
        assert two.stop() == 0


def test_api_processes_sweep_finished_crawls_past_the_ttl(
    redis_server: RedisServer, crawl_id: str, tmp_path: Path,
) -> None:
    from tests.conftest import run_client
    from tests.frontier.test_lifecycle import _finished

    old, recent = f"{crawl_id}-old", f"{crawl_id}-recent"
    run_client(redis_server.url, lambda c: _finished(c, old, 7200))
    run_client(redis_server.url, lambda c: _finished(c, recent, 60))
    client = redis_server.client()
    try:
        with serve(redis_server.url, tmp_path, env={"STATECRAWL_FINISHED_TTL": "3600"}):
            deadline = time.monotonic() + 20
            while client.exists(f"sc:{{{old}}}:meta") or client.exists(f"sc:{{{old}}}:items"):
                assert time.monotonic() < deadline, "the API process did not sweep"
                time.sleep(0.1)
        assert client.exists(f"sc:{{{recent}}}:meta", f"sc:{{{recent}}}:items") == 2
        assert not client.sismember("sc:crawls", old)
    finally:
        client.close()
