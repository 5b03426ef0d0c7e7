"""The worker side of API jobs: documents into the job store, exactly once, and the job's end.

The spiders that run API jobs -- ``job`` for a crawl (:mod:`statecrawl.spiders.job`),
``scrape`` for the pages of a batch (:mod:`statecrawl.spiders.scrape`) -- yield
a :class:`JobResult` per page and a :class:`RobotsBlocked` per URL robots.txt
kept out. :class:`JobDocuments`, an item pipeline, writes each into the job
(:class:`~statecrawl.api.jobs.JobStore`) and drops it: job pages are not stored
in the crawl's ``items``, nor written to files or feeds.

**Once.** The write is awaited in the pipeline, so it reaches Redis before the
page's lease is acknowledged (a lease is acknowledged only after its
callback's output has been through the pipelines). A worker killed after the
write and before the ack has its lease reclaimed; the page is fetched again
and its second document goes under the same key (the page's URL; ``#<n>`` for
a batch's n-th URL), which the job's index maps to the first copy's slot: it
replaces it and counts once (``job_progress.lua``). Failures count once per key
too, and never for a page that has a document.

**The end of a crawl job.** A crawl is ``finished`` in its frontier only when
no request is queued or leased -- every page acknowledged, so every document
written. :meth:`JobDocuments.close_spider` (each job worker, as it leaves)
then ends the job: ``completed``, or ``failed`` when no page succeeded and
some failed; a ``cancelled`` crawl ends it ``cancelled``. The first to try
wins (``job_status.lua``), and :func:`settle_crawl_job` is the same step for
anyone else who notices (the API on a status read, the job supervisor), so a
job never stays ``scraping`` after its crawl ended, whoever was killed when.
A batch completes in the write of its last page.

**Webhooks** (:mod:`statecrawl.api.webhooks`): each page written queues a
``page`` event, the end of a job ``completed`` or ``failed`` (a cancel none),
when the job's webhook takes them; senders deliver them apart from the crawl.

Setting ``STATECRAWL_API_JOB_TTL`` (seconds, default 86400) must match the
API's: every job write sets the job's expiry to now + this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import DropItem, IgnoreRequest

from statecrawl.api import webhooks
from statecrawl.api.batch import BATCH_META_KEY
from statecrawl.api.jobs import JobStore, Transition, job_ttl
from statecrawl.api.responses import document_from_page
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.rolling import recent_keys
from statecrawl.frontier.store import CrawlStore
from statecrawl.frontier.state import RETRY_ERRORS, WorkerState
from statecrawl.sessions.store import DEFAULT_SESSION

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from scrapy import Request
    from scrapy.crawler import Crawler

__all__ = [
    "JobDocuments", "JobResult", "RobotsBlocked", "SkipEndedJobs", "cancel_crawl_job",
    "crawl_job_outcome", "end_job", "expire_crawl_with_job", "settle_crawl_job",
]

logger = logging.getLogger(__name__)

#: Attempts (with backoff up to 2 s) at a job write through a Redis outage.
_ATTEMPTS = 60


@dataclass
class JobResult:
    """One page of an API job: the statecrawl page item (as a dict) and how to show it.

    *key* identifies the page within the job (its URL, or ``#<n>`` for a batch's
    n-th URL); *formats* are the API's format names asked for, *unsupported*
    those accepted but not produced (they become the document's warning)."""

    job_id: str
    key: str
    page: dict[str, Any]
    formats: list[str] = field(default_factory=lambda: ["markdown"])
    unsupported: list[str] = field(default_factory=list)


@dataclass
class RobotsBlocked:
    """A URL of job *job_id* that robots.txt kept out (``GET .../errors`` lists it)."""

    job_id: str
    url: str


def crawl_job_outcome(crawl_state: str | None, docs: int, failed: int) -> tuple[str, str | None] | None:
    """The status a crawl job ends with, given its crawl's state; None while it runs."""
    if crawl_state == "cancelled":
        return "cancelled", None
    if crawl_state != "finished":
        return None
    if docs == 0 and failed > 0:
        return "failed", f"no page of the crawl could be scraped ({failed} failed)"
    return "completed", None


async def end_job(store: JobStore, job_id: str, kind: str, status: str,
                  error: str | None = None) -> str | None:
    """End a running job and queue its ``completed`` / ``failed`` webhook (if it has one);
    returns the job's status now (None: no such job). A cancel sends no webhook.
    A crawl job's crawl keys get the job's expiry (:func:`expire_crawl_with_job`)."""
    change = await store.finish(job_id, status, error)
    if change is not None and change.changed and status in ("completed", "failed"):
        await webhooks.enqueue(store.client, job_id, kind, status,  # type: ignore[arg-type]
                               error=error)
    if change is not None and kind == "crawl":
        await expire_crawl_with_job(store, job_id)
    return None if change is None else change.status


async def expire_crawl_with_job(store: JobStore, job_id: str) -> None:
    """Give every key of a crawl job's crawl (frontier, dupefilter, stats, sessions) the job's
    own expiry, so an API crawl leaves nothing in Redis once its job is gone."""
    expires = await store.client.hget(store.keys(job_id)[0], "expires_at")
    if expires is None:
        return
    k = CrawlKeys(job_id)
    sessions = [s.decode(errors="replace") for s in await store.client.hkeys(k.sessions)]
    names = {*sessions, DEFAULT_SESSION}
    now = (await store.client.time())[0]
    async with store.client.pipeline(transaction=False) as pipe:
        for key in (*k.all(), *(k.jar(s) for s in names), *(k.browser(s) for s in names)):
            pipe.pexpireat(key, int(expires))
        for key in recent_keys(k, now):  # kept an hour at most: never past the job
            pipe.pexpireat(key, int(expires), lt=True)
        await pipe.execute()


async def cancel_crawl_job(store: JobStore, job_id: str) -> Transition | None:
    """Cancel crawl job *job_id* and, if this call ended it, its crawl (its workers stop)
    and every key of the crawl expiring with the job; None: no such job. The one cancel of
    ``DELETE /v2/crawl/{id}`` and the live page's Cancel button."""
    change = await store.cancel(job_id)
    if change is not None and change.changed:
        await CrawlStore(store.client, job_id).cancel()
        await expire_crawl_with_job(store, job_id)
    return change


async def settle_crawl_job(store: JobStore, job_id: str) -> str | None:
    """End crawl job *job_id* if its crawl has ended; returns the job's status (None: no job)."""
    job = await store.get(job_id)
    if job is None or job.finished or job.kind != "crawl":
        return None if job is None else job.status
    state = await store.client.hget(CrawlKeys(job_id).meta, "state")
    outcome = crawl_job_outcome(state.decode() if state else None, job.docs, job.failed)
    if outcome is None:
        return job.status
    return await end_job(store, job_id, "crawl", *outcome)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobDocuments:
    """Write :class:`JobResult` and :class:`RobotsBlocked` items into their job, then drop them."""

    def __init__(self, crawler: Crawler, ttl: float) -> None:
        self.crawler, self.ttl = crawler, ttl
        self.state = WorkerState.of(crawler)
        self._store: JobStore | None = None
        self._page_hooks: dict[str, bool] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JobDocuments:
        value = crawler.settings.get("STATECRAWL_API_JOB_TTL") or os.environ.get("STATECRAWL_API_JOB_TTL")
        return cls(crawler, job_ttl(value))

    def _jobs(self) -> JobStore | None:
        client: Redis | None = self.state.client
        if self._store is None and client is not None:
            self._store = JobStore(client, ttl=self.ttl)
        return self._store

    async def process_item(self, item: Any) -> Any:
        if isinstance(item, JobResult):
            await self._retry(f"a page of job {item.job_id}", lambda jobs: self._write(jobs, item))
            raise DropItem("written to its API job", log_level="DEBUG")
        if isinstance(item, RobotsBlocked):
            await self._retry(f"a robots-blocked URL of job {item.job_id}",
                              lambda jobs: jobs.add_errors(item.job_id, (), [item.url]))
            raise DropItem("written to its API job", log_level="DEBUG")
        return item

    async def _write(self, jobs: JobStore, item: JobResult) -> None:
        page, stats = item.page, self.crawler.stats
        kind = "crawl" if self.state.store is not None and self.state.store.crawl_id == item.job_id \
            else "batch"
        error = page.get("error")
        doc: dict[str, Any] | None = None
        reason: str | None = None
        if page.get("status") is None and isinstance(error, dict):  # not fetched at all
            reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"[:2000]
            entry = {"id": uuid.uuid4().hex, "timestamp": _now(), "url": page.get("url", ""),
                     "error": reason}
            answer = await jobs.add_errors(item.job_id, [entry], keys=[item.key])
            status, ended = answer if answer else (None, False)
            stats.inc_value("statecrawl/job_errors")
        else:
            doc = document_from_page(page, item.formats, unsupported=item.unsupported)
            added = await jobs.add(item.job_id, [doc], keys=[item.key])
            status, ended = (added[0], added[0] == "completed" and added[1] > 0) if added \
                else (None, False)
            stats.inc_value("statecrawl/job_documents")
        if status in ("scraping", "completed") and await self._hooked(jobs, item.job_id):
            await webhooks.enqueue(jobs.client, item.job_id, kind, "page",
                                   [doc] if doc is not None else None,
                                   None if doc is not None else reason)
        if ended:
            await webhooks.enqueue(jobs.client, item.job_id, kind, "completed")
        if status == "cancelled" and kind == "crawl":
            await self.state.store.cancel()  # type: ignore[union-attr]  # the job's crawl too

    async def _hooked(self, jobs: JobStore, job_id: str) -> bool:
        """Does the job's webhook take ``page`` events? Read once per job (its request is fixed)."""
        if job_id not in self._page_hooks:
            hook = webhooks.webhook_of(await jobs.request(job_id))
            self._page_hooks[job_id] = hook is not None and "page" in hook.events
            if len(self._page_hooks) > 10_000:  # a scrape worker serves batch after batch
                self._page_hooks.pop(next(iter(self._page_hooks)))
        return self._page_hooks[job_id]

    async def _retry(self, what: str, write: Any) -> None:
        delay = 0.1
        for _ in range(_ATTEMPTS):
            jobs = self._jobs()
            if jobs is None:
                break
            try:
                await write(jobs)
                return
            except RETRY_ERRORS as exc:
                if self.state.stop.passed():
                    break
                logger.warning("statecrawl: cannot write %s yet (%s); retrying", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        # the lease is not acknowledged without its document: make the worker give it back
        raise RuntimeError(f"could not write {what} to Redis")

    async def close_spider(self) -> None:
        store, jobs = self.state.store, self._jobs()
        if store is None or jobs is None:
            return
        try:
            await self.state.flush()  # our last acknowledgements first: they may finish the crawl
            status = await settle_crawl_job(jobs, store.crawl_id)
        except RETRY_ERRORS as exc:
            logger.warning("statecrawl: could not check whether job %s has ended: %s",
                           store.crawl_id, exc)
            return
        if status is not None and status != "scraping":
            logger.info("statecrawl: job %s is %s", store.crawl_id, status)


class SkipEndedJobs:
    """A downloader middleware: a batch page whose job has ended (cancelled) is not fetched.

    One ``HGET`` of the job's status per batch page; other requests pass untouched."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.state = WorkerState.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SkipEndedJobs:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        batch = request.meta.get(BATCH_META_KEY)
        client = self.state.client
        if not isinstance(batch, dict) or client is None or not isinstance(batch.get("job"), str):
            return
        status = await client.hget(JobStore.keys(batch["job"])[0], "status")
        if status != b"scraping":
            self.crawler.stats.inc_value("statecrawl/job_pages_skipped")
            raise IgnoreRequest(f"job {batch['job']} has ended ({(status or b'gone').decode()})")
