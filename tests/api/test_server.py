"""The API over HTTP: a real ``statecrawl serve`` process, read through firecrawl-py 4.54.0.

Job execution on workers does not exist yet: each test creates its jobs and
their documents directly with the JobStore (:func:`tests.api._serve.make_job`,
a stand-in for the executor), then talks to the server only through the
official SDK (``Firecrawl`` v2, ``V1FirecrawlApp``) or raw HTTP.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from firecrawl import Firecrawl
from firecrawl.v1.client import V1FirecrawlApp
from firecrawl.v2.utils.error_handler import FirecrawlError

from tests.api._serve import Serve, http, job_status, make_job, serve
from tests.conftest import RedisServer


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve(redis_server.url, tmp_path_factory.mktemp("serve")) as server:
        yield server


def v2(api: Serve) -> Firecrawl:
    return Firecrawl(api_key="fc-anything", api_url=api.url)


def v1(api: Serve) -> V1FirecrawlApp:
    return V1FirecrawlApp(api_key="fc-anything", api_url=api.url)


def quiet(call: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the v1 client uses pydantic's .dict()
        return call(*args)


def test_the_sdk_reads_every_document_of_a_crawl_once_in_order(api: Serve, redis_url: str) -> None:
    job_id = make_job(redis_url, docs=250, status="completed")
    job = v2(api).get_crawl_status(job_id)
    assert job.status == "completed" and (job.completed, job.total, job.credits_used) == (250, 250, 250)
    assert [d.markdown for d in job.data] == [f"page {i}" for i in range(250)]
    assert job.next is None and job.expires_at is not None


def test_the_sdk_reads_a_running_crawl_and_a_batch(api: Serve, redis_url: str) -> None:
    running = make_job(redis_url, docs=130)
    job = v2(api).get_crawl_status(running)  # stops at the running job's empty page
    assert job.status == "scraping" and [d.markdown for d in job.data] == [f"page {i}" for i in range(130)]
    batch = make_job(redis_url, kind="batch", docs=120, status="completed")
    status = v2(api).get_batch_scrape_status(batch)
    assert status.status == "completed" and len(status.data) == 120 and status.data[119].markdown == "page 119"


def test_cancel_a_running_crawl_and_a_finished_one(api: Serve, redis_url: str) -> None:
    client = v2(api)
    running = make_job(redis_url, docs=3)
    assert client.cancel_crawl(running) is True
    assert job_status(redis_url, running) == "cancelled"
    assert client.cancel_crawl(running) is False  # 409: already ended
    done = make_job(redis_url, docs=1, status="completed")
    assert client.cancel_crawl(done) is False
    assert job_status(redis_url, done) == "completed"
    status, body, _ = http("DELETE", f"{api.url}/v2/crawl/{done}")
    assert (status, body["success"], body["status"]) == (409, False, "completed")
    batch = make_job(redis_url, kind="batch", docs=1)
    assert client.cancel_batch_scrape(batch) is True
    # a batch is never a 409: the answer is its status now, and the SDK reads "cancelled"
    assert http("DELETE", f"{api.url}/v2/batch/scrape/{batch}")[:2] == (
        200, {"success": True, "status": "cancelled"})
    finished = make_job(redis_url, kind="batch", docs=1, status="completed")
    assert client.cancel_batch_scrape(finished) is False
    assert job_status(redis_url, finished) == "completed"


def test_errors_and_active_crawls(api: Serve, redis_url: str) -> None:
    failed = [{"id": "s1", "url": "https://e.com/x", "error": "timeout", "timestamp": "2026-01-01T00:00:00Z"}]
    running = make_job(redis_url, docs=2, errors=failed, robots=["https://e.com/admin"])
    done = make_job(redis_url, status="completed")
    client = v2(api)
    errors = client.get_crawl_errors(running)
    assert [(e.id, e.url, e.error) for e in errors.errors] == [("s1", "https://e.com/x", "timeout")]
    assert errors.robots_blocked == ["https://e.com/admin"]
    active = {c.id: c for c in client.get_active_crawls().crawls}
    assert running in active and done not in active
    assert active[running].url == "https://e.com" and active[running].options["limit"] == 5000


def test_v1_status_errors_and_cancel(api: Serve, redis_url: str) -> None:
    app = v1(api)
    job_id = make_job(redis_url, docs=120, status="completed")
    status = quiet(app.check_crawl_status, job_id)
    assert status.success and status.status == "completed" and len(status.data) == 120
    assert status.data[0].markdown == "page 0" and status.data[-1].markdown == "page 119"
    assert quiet(app.check_crawl_errors, job_id).errors == []
    running = make_job(redis_url, docs=1)
    assert quiet(app.cancel_crawl, running) == {"success": True, "status": "cancelled"}
    with pytest.raises(Exception, match="Conflict.*already cancelled"):  # v1 raises on all but 200
        quiet(app.cancel_crawl, running)
    batch = make_job(redis_url, kind="batch", docs=2, status="completed")
    assert quiet(app.check_batch_scrape_status, batch).completed == 2


def test_unknown_ids_and_the_wrong_kind_are_404(api: Serve, redis_url: str) -> None:
    client = v2(api)
    unknown = str(uuid.uuid4())
    with pytest.raises(FirecrawlError) as caught:
        client.get_crawl_status(unknown)
    assert caught.value.status_code == 404 and "Job not found" in str(caught.value)
    batch = make_job(redis_url, kind="batch", docs=1)
    crawl = make_job(redis_url, docs=1)
    for method, path in [("GET", f"/v2/crawl/{batch}"), ("DELETE", f"/v2/crawl/{batch}"),
                         ("GET", f"/v2/crawl/{batch}/errors"), ("GET", f"/v2/batch/scrape/{crawl}"),
                         ("DELETE", f"/v1/batch/scrape/{crawl}"), ("GET", f"/v1/crawl/{unknown}"),
                         ("GET", "/v2/crawl/not%20an%20id!")]:
        assert http(method, api.url + path)[:2] == (404, {"success": False, "error": "Job not found"}), path
    assert job_status(redis_url, batch) == "scraping"  # the crawl route did not cancel a batch
    with pytest.raises(FirecrawlError):
        client.cancel_crawl(unknown)


def test_next_is_built_from_the_requests_host(api: Serve, redis_url: str) -> None:
    job_id = make_job(redis_url, docs=30, status="completed")
    for base in (f"http://localhost:{api.port}", f"http://127.0.0.1:{api.port}"):
        status, body, _ = http("GET", f"{base}/v2/crawl/{job_id}?limit=10")
        assert status == 200 and body["next"] == f"{base}/v2/crawl/{job_id}?skip=10&limit=10"
    _, body, _ = http("GET", f"{api.url}/v1/batch/scrape/{make_job(redis_url, 'batch', 5)}?limit=2",
                      headers={"Host": "api.example:8443"})
    assert body["next"].startswith("http://api.example:8443/v1/batch/scrape/")
    _, last, _ = http("GET", f"{api.url}/v2/crawl/{job_id}?skip=20&limit=10")
    assert len(last["data"]) == 10 and "next" not in last  # the v1 SDK tests for the key
    for query in ("skip=-1", "limit=0", "skip=x"):
        status, body, _ = http("GET", f"{api.url}/v2/crawl/{job_id}?{query}")
        assert status == 400 and body["success"] is False and body["details"], query


def test_starts_answer_once_the_job_exists_and_a_key_replays_it(api: Serve) -> None:
    # (execution by workers: tests/api/test_jobs_exec.py; none runs here, so jobs stay queued)
    bodies = {"crawl": {"url": "https://e.com", "limit": 5},
              "batch/scrape": {"urls": ["https://e.com/a"]}}
    for version in ("v1", "v2"):
        for path, body in bodies.items():
            key = {"x-idempotency-key": f"{version}-{path}-{uuid.uuid4()}"}
            status, answer, _ = http("POST", f"{api.url}/{version}/{path}", body, key)
            assert status == 200 and answer["success"] is True, (version, path, answer)
            assert answer["url"] == f"{api.url}/{version}/{path}/{answer['id']}"
            assert http("POST", f"{api.url}/{version}/{path}", body, key)[1]["id"] == answer["id"]
            status, job, _ = http("GET", answer["url"])
            assert status == 200 and job["status"] == "scraping" and job["data"] == []
    started = v2(api).start_crawl("https://nothing-runs-this.example/", limit=5)
    crawls = http("GET", f"{api.url}/v2/crawl/active")[1]["crawls"]
    assert started.id in {c["id"] for c in crawls}
    assert v2(api).cancel_crawl(started.id) is True
    long_key = {"x-idempotency-key": "k" * 257}
    assert http("POST", f"{api.url}/v2/crawl", bodies["crawl"], long_key)[0] == 400


def test_bad_bodies_are_400_and_big_ones_413(api: Serve) -> None:
    status, body, _ = http("POST", f"{api.url}/v2/crawl", '{"url": ')
    assert status == 400 and body["details"][0]["code"] == "json_invalid"
    status, body, _ = http("POST", f"{api.url}/v2/crawl", {"url": "ftp://e.com", "limit": "10"})
    assert status == 400 and {tuple(d["path"]) for d in body["details"]} == {("url",), ("limit",)}
    status, body, _ = http("POST", f"{api.url}/v1/batch/scrape", {"urls": ["mailto:a@b.c"]})
    assert status == 400 and body["error"] == "Bad Request"
    status, body, _ = http("POST", f"{api.url}/v2/scrape", [1, 2])
    assert status == 400 and body["details"][0]["message"] == "the body must be a JSON object"
    status, body, _ = http("POST", f"{api.url}/v2/scrape", b"{" + b" " * (1024 * 1024) + b"}")
    assert status == 413 and body["success"] is False and "STATECRAWL_API_MAX_BODY" in body["error"]


def test_other_errors_are_json_and_the_schema_is_served(api: Serve) -> None:
    assert http("GET", f"{api.url}/v3/nothing")[:2] == (404, {"success": False, "error": "Not found"})
    status, body, headers = http("PUT", f"{api.url}/v2/crawl/x")
    assert (status, body["success"]) == (405, False) and "GET" in headers["allow"]
    status, schema, _ = http("GET", f"{api.url}/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.1")
    assert {"/v2/crawl", "/v2/crawl/{id}", "/v2/crawl/active", "/v1/batch/scrape/{id}"} <= set(schema["paths"])
    crawl = schema["paths"]["/v2/crawl"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    model = schema["components"]["schemas"][crawl["$ref"].rsplit("/", 1)[1]]
    assert {"url", "limit", "scrapeOptions", "includePaths"} <= set(model["properties"])
