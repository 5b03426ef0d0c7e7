"""The job store against the session's private redis-server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from statecrawl.api import JobStore, job_ttl, parse_request
from statecrawl.api.jobs import MAX_PAGE, PAGE
from statecrawl.exceptions import ConfigError

T = TypeVar("T")
SECRET = "Bearer do-not-store"
MARKDOWN = "# Title\n\n" + "A paragraph of ordinary page text, with [a link](https://e.com/x).\n\n" * 40


def run(redis_url: str, body: Callable[[JobStore], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(JobStore(client, **kw))
        finally:
            await client.aclose()
    return asyncio.run(main())


def crawl_body(**extra: Any) -> Any:
    return parse_request("v2", "crawl", {"url": "https://example.com", "limit": 10_000,
                                         "scrapeOptions": {"headers": {"Authorization": SECRET}}, **extra})


def doc(i: int, text: str = "") -> dict[str, Any]:
    return {"markdown": text or f"page {i}", "metadata": {"sourceURL": f"https://e.com/{i}",
                                                         "url": f"https://e.com/{i}", "statusCode": 200}}


def test_create_and_get(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, created = await store.create("crawl", crawl_body())
        assert created and job.status == "scraping" and job.kind == "crawl"
        assert job.url == "https://example.com" and job.limit == 10_000 and job.completed == 0
        assert uuid.UUID(job.id).version == 4
        again = await store.get(job.id)
        assert again == job
        assert (await store.request(job.id))["url"] == "https://example.com"
        assert await store.get(str(uuid.uuid4())) is None
        assert await store.get("../not an id") is None
        batch, _ = await store.create("batch", parse_request("v2", "batch", {"urls": ["a.com", "b.com"]}))
        assert (batch.kind, batch.url, batch.total, batch.limit) == ("batch", "", 2, 2)
    run(redis_url, body)


def test_idempotency_race_makes_one_job(redis_url: str) -> None:
    key = "idem-" + uuid.uuid4().hex

    async def body(store: JobStore) -> None:
        results = await asyncio.gather(*[store.create("crawl", crawl_body(), idempotency_key=key)
                                         for _ in range(20)])
        assert sum(created for _, created in results) == 1
        assert len({job.id for job, _ in results}) == 1
        job_id = results[0][0].id
        assert [j.id for j in await store.active("crawl")].count(job_id) == 1
        await store.finish(job_id, "completed")
        job, created = await store.create("crawl", crawl_body(), idempotency_key=key)
        assert (job.id, created, job.status) == (job_id, False, "completed")  # starts nothing
        other, created = await store.create("batch", {"urls": ["https://a.com"]}, idempotency_key=key)
        assert created and other.id != job_id  # one key, two kinds: two jobs
    run(redis_url, body)


def test_every_key_has_the_jobs_expiry(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body())
        await store.add(job.id, [doc(0)], discovered=3, keys=["https://e.com/0"])
        await store.add_errors(job.id, [{"id": "e1", "url": "https://e.com/x", "error": "boom"}],
                               ["https://e.com/private"], keys=["https://e.com/x"])
        job = await store.get(job.id)
        # all but hooks and secret: no webhook, no headers (see test_webhooks, test_jobs_exec)
        keys = store.keys(job.id)[:6]
        expiries = [await store.client.pexpiretime(k) for k in keys]
        assert len(set(expiries)) == 1 and expiries[0] == int(job.expires_at.timestamp() * 1000)
        ttl = await store.client.pttl(keys[0])
        assert 600_000 - 5_000 < ttl <= 600_000
        assert 0 < (job.expires_at - job.created_at).total_seconds() <= 600 + 5
        # a job that has ended takes no writes: its expiry stays where the end put it
        await store.finish(job.id, "completed")
        end = await store.client.pexpiretime(keys[0])
        assert await store.add(job.id, [doc(1)]) == ("completed", 0)
        assert [await store.client.pexpiretime(k) for k in keys] == [end] * len(keys)
    run(redis_url, body, ttl=600)


def test_headers_are_never_stored(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        requests: list[tuple[Any, Any]] = [
            ("crawl", crawl_body()),
            ("crawl", {"url": "https://e.com", "headers": {"Cookie": SECRET},
                       "scrapeOptions": {"headers": {"Cookie": SECRET}, "formats": ["html"]}}),
            ("batch", parse_request("v2", "batch", {"urls": ["https://e.com"], "headers": {"X": SECRET}})),
        ]
        for kind, request in requests:
            job, _ = await store.create(kind, request)
            raw = await store.client.get(store.keys(job.id)[1])
            assert SECRET.encode() not in raw and b"headers" not in raw
            assert SECRET.encode() not in repr(await store.client.hgetall(store.keys(job.id)[0])).encode()
    run(redis_url, body)


def test_cancel_and_finish_transitions(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body())
        first = await store.cancel(job.id)
        assert first is not None and (first.status, first.changed) == ("cancelled", True)
        second = await store.cancel(job.id)
        assert second is not None and (second.status, second.changed) == ("cancelled", False)
        assert await store.add(job.id, [doc(0)]) == ("cancelled", 0)
        assert job.id not in [j.id for j in await store.active("crawl")]

        done, _ = await store.create("crawl", crawl_body())
        assert (await store.finish(done.id, "completed")).changed  # type: ignore[union-attr]
        late = await store.cancel(done.id)  # the API answers 409 for a crawl
        assert late is not None and (late.status, late.changed) == ("completed", False)

        failed, _ = await store.create("crawl", crawl_body())
        await store.finish(failed.id, "failed", error="robots.txt of the start URL disallows it")
        record = await store.get(failed.id)
        assert record is not None and record.status == "failed" and record.error and record.finished_at
        assert await store.cancel(str(uuid.uuid4())) is None
        with pytest.raises(ValueError):
            await store.finish(failed.id, "scraping")
    run(redis_url, body)


def test_pagination_over_2500_documents(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body())
        for start in range(0, 2500, 500):
            status, accepted = await store.add(job.id, [doc(i) for i in range(start, start + 500)],
                                               discovered=500)  # type: ignore[misc]
            assert (status, accepted) == ("scraping", 500)
        first = await store.page(job.id)
        assert first is not None and len(first.documents) == PAGE and first.next_skip == PAGE
        assert first.documents[0]["metadata"]["url"] == "https://e.com/0"
        big = await store.page(job.id, skip=1000, limit=5000)
        assert big is not None and len(big.documents) == MAX_PAGE and big.next_skip == 2000
        assert big.documents[-1]["markdown"] == "page 1999"
        # running, everything read: the cursor stays where it is
        tail = await store.page(job.id, skip=2500)
        assert tail is not None and tail.documents == [] and tail.next_skip == 2500
        await store.finish(job.id, "completed")
        seen, skip, pages = [], 0, 0
        while skip is not None and pages < 30:
            page = await store.page(job.id, skip=skip, limit=1000)
            assert page is not None
            seen += [d["markdown"] for d in page.documents]
            skip, pages = page.next_skip, pages + 1
        assert seen == [f"page {i}" for i in range(2500)] and pages == 3
        end = await store.page(job.id, skip=2500)
        assert end is not None and end.documents == [] and end.next_skip is None
        assert end.job.completed == 2500 and end.job.total == 2500
        with pytest.raises(ValueError):
            await store.page(job.id, skip=-1)
    run(redis_url, body)


def test_page_byte_cap(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body())
        await store.add(job.id, [doc(i, MARKDOWN) for i in range(30)])
        one = len(json.dumps(doc(0, MARKDOWN), separators=(",", ":")).encode())
        page = await store.page(job.id, limit=30, max_bytes=one * 10 + one // 2)
        assert page is not None and len(page.documents) == 10 and page.next_skip == 10
        tiny = await store.page(job.id, skip=5, max_bytes=10)
        assert tiny is not None and len(tiny.documents) == 1 and tiny.next_skip == 6  # one always fits
    run(redis_url, body)


def test_limit_is_enforced_crawl_wide(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body(limit=10))
        results = await asyncio.gather(*[store.add(job.id, [doc(i)], discovered=1) for i in range(15)])
        assert sum(accepted for _, accepted in results) == 10  # type: ignore[misc]
        record = await store.get(job.id)
        assert record is not None and (record.docs, record.total) == (10, 10)
    run(redis_url, body)


def test_compression_round_trip(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body())
        original = doc(0, MARKDOWN + "Ünïcödé ✓")
        await store.add(job.id, [original])
        blob = await store.client.hget(store.keys(job.id)[2], "0")
        assert blob.startswith(b"\x28\xb5\x2f\xfd")  # a zstd frame
        assert len(blob) * 3 < len(json.dumps(original).encode())
        page = await store.page(job.id)
        assert page is not None and page.documents == [original]
        assert store.unpack(store.pack(original)) == original
    run(redis_url, body)


def test_errors_and_active(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        a, _ = await store.create("crawl", crawl_body())
        b, _ = await store.create("crawl", crawl_body())
        gone, _ = await store.create("crawl", crawl_body())
        await store.client.delete(*store.keys(gone.id))  # expired without ending
        await store.add_errors(a.id, [{"id": "s1", "url": "https://e.com/1", "error": "timeout",
                                       "code": "SCRAPE_TIMEOUT", "timestamp": "2026-01-01T00:00:00.000Z"}],
                               ["https://e.com/admin", "https://e.com/admin"])
        errors, robots = await store.errors(a.id)  # type: ignore[misc]
        assert errors[0]["code"] == "SCRAPE_TIMEOUT" and robots == ["https://e.com/admin"]
        record = await store.get(a.id)
        assert record is not None and record.failed == 1 and record.completed == 1
        assert await store.errors(str(uuid.uuid4())) is None
        await store.finish(b.id, "completed")
        active = [j.id for j in await store.active("crawl")]
        assert a.id in active and b.id not in active and gone.id not in active
        index = {m.decode() for m in await store.client.zrange(store.active_key("crawl"), 0, -1)}
        assert gone.id not in index and b.id not in index
    run(redis_url, body)


def test_settings_and_client_checks(redis_url: str) -> None:
    assert job_ttl(None) == 86400 and job_ttl("3600") == 3600
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ConfigError, match="STATECRAWL_API_JOB_TTL"):
            job_ttl(bad)
    with pytest.raises(ConfigError, match="decode_responses"):
        JobStore(Redis.from_url(redis_url, decode_responses=True))


def test_a_page_stored_twice_is_one_document(redis_url: str) -> None:
    """A worker killed between storing a page's document and acknowledging the page: the page
    is fetched again, and its second document replaces the first (same slot, counted once)."""
    async def body(store: JobStore) -> None:
        job, _ = await store.create("crawl", crawl_body(limit=2))
        assert await store.add(job.id, [doc(0), doc(1)], keys=["u0", "u1"]) == ("scraping", 2)
        again = {**doc(1), "markdown": "second copy"}
        assert await store.add(job.id, [again], keys=["u1"]) == ("scraping", 1)
        # the limit is full, but a page already in the job still takes its own slot
        assert await store.add(job.id, [doc(2)], keys=["u2"]) == ("scraping", 0)
        page = await store.page(job.id)
        assert page is not None and page.job.docs == 2
        assert [d["markdown"] for d in page.documents] == [doc(0)["markdown"], "second copy"]
        # a failure counts once per key, and not at all for a page with a document
        errors = [{"id": "e", "url": "u3", "error": "boom"}]
        await store.add_errors(job.id, errors, keys=["u3"])
        await store.add_errors(job.id, errors, keys=["u3"])
        await store.add_errors(job.id, [{"id": "e", "url": "u1", "error": "late"}], keys=["u1"])
        job = await store.get(job.id)
        assert (job.docs, job.failed) == (2, 1)
    run(redis_url, body)


def test_a_batch_completes_with_its_last_page(redis_url: str) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.create("batch", {"urls": ["https://e.com/a", "https://e.com/b",
                                                        "https://e.com/c"]})
        assert await store.add(job.id, [doc(0)], keys=["#0"]) == ("scraping", 1)
        assert await store.add_errors(job.id, [{"id": "e", "url": "https://e.com/b",
                                                "error": "boom"}], keys=["#1"]) == ("scraping", False)
        assert await store.add(job.id, [doc(0)], keys=["#0"]) == ("scraping", 1)  # a re-fetch
        assert await store.add(job.id, [doc(2)], keys=["#2"]) == ("completed", 1)
        job = await store.get(job.id)
        assert (job.status, job.docs, job.failed, job.total) == ("completed", 2, 1, 3)
        assert job.finished_at is not None
    run(redis_url, body)
