"""``statecrawl worker --jobs N``: run the HTTP API's crawl jobs, at most N at once, fairly.

A crawl job (``POST /v2/crawl``) is a crawl in Redis whose id is the job id
(:mod:`statecrawl.api.jobs`). This command, on any number of machines, keeps
up to N job workers running -- ``scrapy crawl job -a crawl_id=<id>``
(:mod:`statecrawl.spiders.job`), each a plain statecrawl worker of that
crawl, with the net guard on -- and starts them on the jobs that need them
most: every :data:`POLL` s it reads the running jobs (``sc:api:active:crawl``)
and their live workers (``sc:{id}:workers``), and gives a free slot to the job
with the fewest live workers, the oldest first among equals. So each job gets
a worker before any gets a second, a job is served by workers of many
machines at once, and N bounds the jobs one supervisor runs.

A worker exits when its crawl finishes or is cancelled; its job then ends
(the worker does that itself; :func:`~statecrawl.api.worker.settle_crawl_job`
here too, in case it was killed). A worker that exits with an error is
started again after a backoff (1, 2, 4 ... s); after :data:`MAX_FAILURES` in a
row without the job making progress, the job is ended ``failed`` with the
reason, rather than left ``scraping`` forever.

It also runs a webhook sender (:class:`~statecrawl.api.webhooks.WebhookSender`,
``STATECRAWL_WEBHOOK_*``): job events are delivered by these processes, for
crawl and batch jobs alike, so run at least one wherever the API is used with
webhooks.

SIGINT / SIGTERM: no new worker; the running ones get SIGTERM (they give
their leases back, so other machines' workers carry on) and SIGKILL after
:data:`~statecrawl.cli.workers.HANGUP_GRACE` s. Exit status 128 + the signal.
Worker output goes to this command's stdout/stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from statecrawl.api.jobs import JobStore, job_ttl
from statecrawl.api.webhooks import WebhookSender
from statecrawl.api.worker import end_job, expire_crawl_with_job, settle_crawl_job
from statecrawl.cli.common import say
from statecrawl.cli.workers import HANGUP_GRACE, worker_command, worker_env
from statecrawl.frontier.connection import connect
from statecrawl.frontier.keys import CrawlKeys
from statecrawl.frontier.store import LIVE_WORKER_WINDOW

__all__ = ["JOB_SPIDER", "MAX_FAILURES", "POLL", "JobSupervisor", "run_jobs"]

logger = logging.getLogger(__name__)

JOB_SPIDER = "job"
#: Seconds between two looks at the running jobs.
POLL = 0.5
#: Failed worker starts in a row (with no progress of the job between) that fail the job.
MAX_FAILURES = 5
_BACKOFF_MAX = 30.0


@dataclass
class _Failures:
    count: int = 0
    progress: int = -1  # the job's docs + failed at the last failure
    retry_at: float = 0.0


@dataclass
class JobSupervisor:
    """Keeps up to *slots* job workers running (module docstring)."""

    url: str
    out: Path
    slots: int
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    failures: dict[str, _Failures] = field(default_factory=dict)

    async def pick(self, client: Redis, store: JobStore) -> list[str]:
        """Running crawl jobs this supervisor does not serve yet, neediest first."""
        ids = [m.decode() for m in await client.zrange(store.active_key("crawl"), 0, -1)]
        ids = [i for i in ids if i not in self.children]
        if not ids:
            return []
        now_s, now_us = await client.time()
        since = now_s * 1000 + now_us // 1000 - int(LIVE_WORKER_WINDOW * 1000)
        async with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(store.keys(job_id)[0], "status")
                pipe.zcount(CrawlKeys(job_id).workers, since, "+inf")
            replies = await pipe.execute()
        now = time.monotonic()
        ready = [(int(replies[2 * n + 1]), n, job_id) for n, job_id in enumerate(ids)
                 if replies[2 * n] == b"scraping"
                 and self.failures.get(job_id, _Failures()).retry_at <= now]
        return [job_id for _live, _n, job_id in sorted(ready)]

    def start(self, job_id: str) -> None:
        cmd = worker_command(JOB_SPIDER, job_id, {})
        self.children[job_id] = subprocess.Popen(  # noqa: S603 - validated argv, no shell
            cmd, env=self.env, stdin=subprocess.DEVNULL, process_group=0)
        say(f"job {job_id}: worker started (pid {self.children[job_id].pid})")

    async def reap(self, store: JobStore) -> None:
        for job_id, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[job_id]
            status = await settle_crawl_job(store, job_id)
            if status not in (None, "scraping"):  # again: the worker wrote its sessions last
                await expire_crawl_with_job(store, job_id)
            if code == 0 or status != "scraping":
                self.failures.pop(job_id, None)
                say(f"job {job_id}: worker exited ({code}); the job is {status or 'gone'}")
                continue
            await self._failed(store, job_id, code)

    async def _failed(self, store: JobStore, job_id: str, code: int) -> None:
        job = await store.get(job_id)
        progress = job.completed if job else 0
        failure = self.failures.setdefault(job_id, _Failures())
        failure.count = failure.count + 1 if progress == failure.progress else 1
        failure.progress = progress
        if failure.count >= MAX_FAILURES:
            self.failures.pop(job_id, None)
            await end_job(store, job_id, "crawl", "failed",
                          f"its workers failed {MAX_FAILURES} times in a row (last exit status "
                          f"{code}); see their logs")
            say(f"job {job_id}: failed: its workers exited with an error {MAX_FAILURES} times")
            return
        failure.retry_at = time.monotonic() + min(2.0 ** (failure.count - 1), _BACKOFF_MAX)
        say(f"job {job_id}: worker exited with status {code}; trying again")

    def stop(self, grace: float = HANGUP_GRACE) -> None:
        for proc in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    proc.kill()
                proc.wait(5)

    async def run(self, stop: asyncio.Event) -> None:
        client = await connect(self.url, name="statecrawl:jobs")
        store = JobStore(client, ttl=job_ttl(self.env.get("STATECRAWL_API_JOB_TTL")))
        sender = asyncio.create_task(WebhookSender.from_env(client, self.env).run(stop))
        try:
            while not stop.is_set():
                await self.reap(store)
                free = self.slots - len(self.children)
                if free > 0:
                    for job_id in (await self.pick(client, store))[:free]:
                        self.start(job_id)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL)
        finally:
            stop.set()
            await asyncio.to_thread(self.stop)
            with contextlib.suppress(Exception):  # its own errors are logged where they happen
                await asyncio.wait_for(sender, 15)
            await client.aclose()


def run_jobs(url: str, out: Path, slots: int) -> int:
    """The ``statecrawl worker --jobs N`` command; returns its exit status."""
    env = worker_env(url, out)
    env["STATECRAWL_NET_GUARD"] = "true"  # API users' URLs: no loopback, private or metadata address
    supervisor = JobSupervisor(url, out, slots, env)
    received: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda s=sig: (received.append(s), stop.set()))
        say(f"serving crawl jobs, at most {slots} at once (stop with Ctrl-C)")
        await supervisor.run(stop)

    asyncio.run(main())
    sys.stdout.flush()
    return 128 + received[0] if received else 0
