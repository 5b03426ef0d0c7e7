"""``POST /v1|v2/batch/scrape``: many pages, scraped by the long-running scrape workers.

A batch job is a job record (:mod:`statecrawl.api.jobs`, ``total`` = its URLs)
plus one request per URL in the scrape service crawl (the same workers and
frontier as ``POST /scrape``, :mod:`statecrawl.api.scrape`; no process is
started). Each request carries ``meta["statecrawl_batch"]`` = ``{job, key,
formats, unsupported}`` (``key`` = ``#<n>`` for the n-th URL) and the page
options under ``meta["statecrawl_scrape"]``; nobody waits on it: the worker
writes the page into the job (:class:`~statecrawl.api.worker.JobDocuments`),
and the job completes with its last page. Batch requests have a lower priority
than single scrapes, so a big batch does not hold up an interactive scrape.

**Never lost, never twice.** The job record is written first, then the
requests are enqueued in one commit, then the record is marked ``queued``. An
API process killed between the two leaves a job without ``queued``: a repeat
of the start with the same ``x-idempotency-key`` enqueues it, and so does any
status read (:meth:`BatchService.repair`) once the job is older than
:data:`REPAIR_AFTER`. Enqueuing twice is harmless: a page's document goes
under its key, so a second copy replaces the first.

A cancelled batch's requests still in the frontier are skipped before they are
fetched (:class:`~statecrawl.api.worker.SkipEndedJobs`).
"""

from __future__ import annotations

from datetime import datetime, timezone

from statecrawl.api.jobs import Job, JobStore
from statecrawl.api.models import BatchScrapeRequest
from statecrawl.api.models_v1 import parse_request
from statecrawl.api.scrape import SCRAPE_META_KEY, ScrapeService, item_options, unsupported_formats
from statecrawl.frontier.service import service_request

__all__ = ["BATCH_META_KEY", "BATCH_PRIORITY", "REPAIR_AFTER", "BatchService"]

#: ``request.meta`` key of a batch page: ``{job, key, formats, unsupported}``.
BATCH_META_KEY = "statecrawl_batch"
#: Below single scrapes (priority 0).
BATCH_PRIORITY = -1
#: Seconds after which a batch job that was never marked ``queued`` is enqueued again.
REPAIR_AFTER = 30.0
_CALLBACK, _ERRBACK = "parse", "on_error"


class BatchService:
    """Starts batch jobs on the scrape service crawl of *scrapes*."""

    def __init__(self, scrapes: ScrapeService, store: JobStore) -> None:
        self.scrapes, self.store = scrapes, store

    async def enqueue(self, job_id: str, body: BatchScrapeRequest) -> None:
        """Put one request per URL of *body* in the scrape service's frontier; mark the job queued."""
        options = {k: v for k, v in item_options(body).items() if v is not None}
        batch = {"job": job_id, "formats": body.format_names,
                 "unsupported": unsupported_formats(body)}
        requests = [service_request(url, callback=_CALLBACK, errback=_ERRBACK, priority=BATCH_PRIORITY,
                                    meta={BATCH_META_KEY: {**batch, "key": f"#{i}"},
                                          SCRAPE_META_KEY: options})
                    for i, url in enumerate(body.urls)]
        await self.scrapes.service.enqueue(requests, priority=BATCH_PRIORITY)
        await self.store.mark(job_id, "queued")

    async def repair(self, job: Job) -> bool:
        """Enqueue a running batch that was never marked queued and is older than REPAIR_AFTER."""
        if job.kind != "batch" or job.finished or job.queued:
            return False
        if (datetime.now(timezone.utc) - job.created_at).total_seconds() < REPAIR_AFTER:
            return False
        stored = await self.store.request(job.id)
        if stored is None:
            return False
        body = parse_request("v2", "batch", stored)
        assert isinstance(body, BatchScrapeRequest)
        await self.enqueue(job.id, body)
        return True
