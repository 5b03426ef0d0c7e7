"""The API's job store: crawl and batch-scrape jobs, their documents and errors, in Redis.

API processes keep nothing of their own: a job lives in Redis from the start
request on, so any API process answers any request about it.

Key schema: the ``sc:{id}:job*`` and ``sc:api:active:<kind>`` rows of
:mod:`statecrawl.frontier.keys` (every key statecrawl writes is written
there). A job's keys share the hash tag ``{<id>}`` -- the same tag as the
frontier keys of the crawl that runs it (crawl id = job id), so under Redis
Cluster a job and its crawl sit in one slot and one Lua script may touch
both. ``<id>`` is a UUID. A status page is one HMGET of the indexes of its
documents: O(page), not O(job). The active index is the one key outside a
job's slot; it is written after the create script and repaired on read.

Every write is one Lua script (``lua/job_*.lua``) that also sets the job's
expiry: ``expires_at`` = now + the TTL (``STATECRAWL_API_JOB_TTL``, 24 h by
default), the same ``PEXPIREAT`` on every key of the job. So a job lives a
TTL past its last change, its documents exactly as long as its record.
Reads never extend it.

Idempotency: a start with an ``x-idempotency-key`` gets the job id
``uuid5(kind + key)``; ``job_create.lua`` creates the job only if that id is
free. Concurrent starts with one key make one job, and the key lives and
expires with its job -- there is no separate key to keep in step.

The client must return bytes (``decode_responses=False``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Literal, cast

import zstandard
from redis.asyncio import Redis

from statecrawl.api.models import Body
from statecrawl.exceptions import ConfigError

__all__ = [
    "DEFAULT_JOB_TTL", "MAX_ERRORS", "MAX_PAGE", "MAX_PAGE_BYTES", "PAGE", "Job", "JobStore",
    "Page", "Transition", "job_ttl",
]

Kind = Literal["crawl", "batch"]
FINISHED = frozenset({"completed", "failed", "cancelled"})
DEFAULT_JOB_TTL = 24 * 3600  #: seconds; the STATECRAWL_API_JOB_TTL setting
PAGE, MAX_PAGE = 100, 1000  #: documents per status page: default, most
MAX_PAGE_BYTES = 10 * 1024 * 1024  #: document JSON per status page, at most (one doc always fits)
MAX_ERRORS = 10_000  #: errors and robots-blocked URLs kept per job
_ZSTD_LEVEL = 3  # see the README: 2.3x on Markdown pages, 0.03 ms per document
_CHUNK = 100  # documents per HMGET while reading a page
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_IDEMPOTENCY = uuid.UUID("5c0f3b1e-8a52-4c4e-9d0b-2f6a0d1c7e93")
_SCRIPTS = ("create", "status", "progress", "errors", "mark")


def job_ttl(value: str | float | None) -> float:
    """The job TTL in seconds from the STATECRAWL_API_JOB_TTL setting (None: the default)."""
    if value is None or value == "":
        return float(DEFAULT_JOB_TTL)
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = 0.0
    if not ttl > 0:
        raise ConfigError(f"STATECRAWL_API_JOB_TTL={value!r}: give the seconds a job is kept, e.g. 86400")
    return ttl


def _ms(value: bytes | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value) / 1000, timezone.utc)


@dataclass(frozen=True)
class Job:
    """A job record as read from Redis."""

    id: str
    kind: str
    status: str
    url: str
    limit: int
    docs: int
    failed: int
    total: int
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    queued: bool = False  # a batch whose pages are all in the frontier (statecrawl.api.batch)

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[Any, Any]) -> Job:
        f = {k.decode(): v for k, v in raw.items()}
        return cls(
            id=job_id, kind=f["kind"].decode(), status=f["status"].decode(),
            url=f.get("url", b"").decode(), limit=int(f.get("limit", 0)), docs=int(f.get("docs", 0)),
            failed=int(f.get("failed", 0)), total=int(f.get("total", 0)),
            created_at=_ms(f["created_at"]), expires_at=_ms(f["expires_at"]),  # type: ignore[arg-type]
            finished_at=_ms(f.get("finished_at")),
            error=f["error"].decode() if "error" in f else None, queued="queued" in f,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def completed(self) -> int:
        """Pages done: stored documents and failed pages (the status page's ``completed``)."""
        return self.docs + self.failed

    @property
    def credits_used(self) -> int:
        return self.docs


@dataclass(frozen=True)
class Page:
    """One status page: documents ``skip`` .. ``skip + len(documents) - 1``.

    ``next_skip`` is where the next page starts; None when the job has ended
    and nothing is left. A running job whose page came back empty gets its own
    ``skip`` again, never a fresh cursor.
    """

    job: Job
    documents: list[dict[str, Any]]
    next_skip: int | None


@dataclass(frozen=True)
class Transition:
    """The result of ending a job: its status now, and whether this call changed it."""

    status: str
    changed: bool


class JobStore:
    """Jobs in Redis (see the module docstring for the keys); *client* is a redis.asyncio client."""

    def __init__(self, client: Redis, *, ttl: float = DEFAULT_JOB_TTL) -> None:
        if client.get_connection_kwargs().get("decode_responses"):  # type: ignore[no-untyped-call]
            raise ConfigError("the job store needs a Redis client with decode_responses=False")
        self.client = client
        self.ttl_ms = int(job_ttl(ttl) * 1000)
        lua = resources.files("statecrawl.api").joinpath("lua")
        common = lua.joinpath("job_common.lua").read_text()
        self._scripts = {name: client.register_script(common + lua.joinpath(f"job_{name}.lua").read_text())
                         for name in _SCRIPTS}
        self._compress = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._decompress = zstandard.ZstdDecompressor()

    @staticmethod
    def keys(job_id: str) -> list[str]:
        """The job's keys, in the order the scripts take them: job, request, docs, errors, robots,
        index (document key -> its slot in docs, or ``failed``), hooks (webhook deliveries,
        :mod:`statecrawl.api.webhooks`), secret (sealed headers for the job's pages)."""
        if not _ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        p = f"sc:{{{job_id}}}:job"
        return [p, p + ":request", p + ":docs", p + ":errors", p + ":robots", p + ":index",
                p + ":hooks", p + ":secret"]

    @staticmethod
    def active_key(kind: str) -> str:
        return f"sc:api:active:{kind}"

    @staticmethod
    def job_id(kind: str, idempotency_key: str | None = None) -> str:
        """A fresh id, or the one id every start of *kind* with *idempotency_key* gets."""
        if idempotency_key is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_IDEMPOTENCY, f"{kind}\n{idempotency_key}"))

    # -- writes -------------------------------------------------------------------------

    async def create(self, kind: Kind, request: Body | Mapping[str, Any],
                     idempotency_key: str | None = None, secret: bytes = b"") -> tuple[Job, bool]:
        """Create a job for *request* (stored without its headers); returns (job, created).

        With *idempotency_key*, a second start returns the first job and creates nothing.
        *secret* (the request's headers, sealed by the caller) is kept apart, while the job
        runs: it is deleted when the job ends (:meth:`secret`)."""
        if kind not in ("crawl", "batch"):
            raise ValueError(f"unknown job kind {kind!r}")
        body = stored_request(request)
        job_id = self.job_id(kind, idempotency_key)
        if kind == "crawl":
            url, limit, total = body.get("url", ""), int(body.get("limit", 0)), 0
        else:  # a batch knows its pages up front, and keeps one document per URL at most
            url, limit = "", len(body.get("urls", ()))
            total = limit
        reply = await self._scripts["create"](
            keys=self.keys(job_id),
            args=[self.ttl_ms, kind, url, json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                  limit, total, secret])
        created = bool(reply[0])
        job = Job.from_hash(job_id, dict(zip(reply[1::2], reply[2::2])))
        if not job.finished:  # also on a repeat: a start killed before this line is repaired
            created_ms = int(job.created_at.timestamp() * 1000)
            await self.client.zadd(self.active_key(job.kind), {job_id: created_ms})
        return job, created

    async def finish(self, job_id: str, status: str, error: str | None = None) -> Transition | None:
        """End a running job (completed, failed or cancelled); None if there is no such job.

        ``changed`` is False when it had already ended: its status is left as it was."""
        if status not in FINISHED:
            raise ValueError(f"a job ends as one of {sorted(FINISHED)}, not {status!r}")
        if not _ID.fullmatch(job_id):
            return None
        now, changed, kind = await self._scripts["status"](keys=self.keys(job_id),
                                                           args=[self.ttl_ms, status, error or ""])
        if not now:
            return None
        if changed:
            await self.client.zrem(self.active_key(kind.decode()), job_id)
        return Transition(now.decode(), bool(changed))

    async def mark(self, job_id: str, field: str, value: str | int = 1) -> bool:
        """Set *field* of the job record, if the job exists (its expiry unchanged)."""
        return bool(await self._scripts["mark"](keys=self.keys(job_id)[:1], args=[field, value]))

    async def cancel(self, job_id: str) -> Transition | None:
        """Cancel a running job; a finished one reports its own status with ``changed`` False."""
        return await self.finish(job_id, "cancelled")

    async def add(self, job_id: str, documents: Sequence[Mapping[str, Any]] = (),
                  discovered: int = 0, *, keys: Sequence[str] | None = None) -> tuple[str, int] | None:
        """Append *documents* in completion order, count *discovered* pages into ``total``.

        *keys* (one per document: its page's URL, ``#<n>`` for a batch's n-th URL) make
        a second copy of a document replace the first instead of adding to the job.
        Returns (status, accepted): a job that has ended accepts nothing, and no
        more than its limit is ever kept; a batch whose last page this was answers
        ``completed``. None if there is no such job."""
        keys = list(keys) if keys is not None else [""] * len(documents)
        if len(keys) != len(documents):
            raise ValueError("one key per document")
        pairs: list[str | bytes] = []
        for key, doc in zip(keys, documents):
            pairs += [key, self.pack(doc)]
        status, accepted, _docs, _total = await self._scripts["progress"](
            keys=self.keys(job_id), args=[self.ttl_ms, int(discovered), *pairs])
        return (status.decode(), int(accepted)) if status else None

    async def add_errors(self, job_id: str, errors: Iterable[Mapping[str, Any]] = (),
                         robots_blocked: Iterable[str] = (), *,
                         keys: Sequence[str] | None = None) -> tuple[str, bool] | None:
        """Record failed pages (``{id, timestamp, url, code?, error}``) and robots-blocked URLs.

        *keys* as for :meth:`add`: a page counts as failed once, and not at all once it has
        a document. Returns (the job's status, whether this call completed it: a batch whose
        last page this was), None if there is no such job."""
        entries = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in errors]
        keys = list(keys) if keys is not None else [""] * len(entries)
        if len(keys) != len(entries):
            raise ValueError("one key per error")
        pairs: list[str] = []
        for key, entry in zip(keys, entries):
            pairs += [key, entry]
        status, _failed, ended = await self._scripts["errors"](
            keys=self.keys(job_id), args=[self.ttl_ms, MAX_ERRORS, len(entries), *pairs,
                                          *robots_blocked])
        return (status.decode(), bool(ended)) if status else None

    # -- reads --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job record (a few small fields), or None (unknown, expired, or not an id)."""
        if not _ID.fullmatch(job_id):
            return None
        raw = await self.client.hgetall(self.keys(job_id)[0])
        return Job.from_hash(job_id, raw) if raw else None

    async def secret(self, job_id: str) -> bytes | None:
        """The sealed secret of a running job (None: none, or the job has ended)."""
        if not _ID.fullmatch(job_id):
            return None
        value: bytes | None = await self.client.get(self.keys(job_id)[7])
        return value

    async def request(self, job_id: str) -> dict[str, Any] | None:
        """The stored request body (v2 names, no headers)."""
        if not _ID.fullmatch(job_id):
            return None
        raw = await self.client.get(self.keys(job_id)[1])
        return None if raw is None else json.loads(raw)

    async def page(self, job_id: str, skip: int = 0, limit: int | None = None,
                   max_bytes: int = MAX_PAGE_BYTES) -> Page | None:
        """Documents from *skip* on: *limit* of them (default 100, at most 1,000) and at most
        *max_bytes* of JSON (but always one). None if there is no such job."""
        if skip < 0 or (limit is not None and limit < 1):
            raise ValueError("skip must be >= 0 and limit >= 1")
        job = await self.get(job_id)
        if job is None:
            return None
        end = min(skip + min(limit or PAGE, MAX_PAGE), job.docs)
        documents = await self._documents(self.keys(job_id)[2], skip, end, max_bytes)
        after = skip + len(documents)
        if not job.finished:
            next_skip: int | None = after  # an empty page repeats its own skip
        else:
            next_skip = after if after < job.docs else None
        return Page(job, documents, next_skip)

    async def _documents(self, docs_key: str, skip: int, end: int, max_bytes: int) -> list[dict[str, Any]]:
        """Documents skip .. end - 1, in HMGETs of _CHUNK, stopping before the one that would pass
        *max_bytes* (told by each frame's header, before decompressing it)."""
        documents: list[dict[str, Any]] = []
        size = 0
        for start in range(skip, end, _CHUNK):
            blobs = cast("list[bytes | None]", await self.client.hmget(
                docs_key, list(range(start, min(start + _CHUNK, end)))))
            for blob in blobs:
                if blob is None:  # the job expired under us
                    return documents
                size += max(0, zstandard.frame_content_size(blob))
                if documents and size > max_bytes:
                    return documents
                documents.append(self.unpack(blob))
        return documents

    async def errors(self, job_id: str) -> tuple[list[dict[str, Any]], list[str]] | None:
        """(errors, robots-blocked URLs), or None if there is no such job."""
        if await self.get(job_id) is None:
            return None
        keys = self.keys(job_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.lrange(keys[3], 0, -1)
            pipe.smembers(keys[4])
            entries, robots = await pipe.execute()
        return [json.loads(e) for e in entries], sorted(u.decode() for u in robots)

    async def active(self, kind: Kind = "crawl") -> list[Job]:
        """Running jobs of *kind*, oldest first; ids that ended or expired leave the index."""
        key = self.active_key(kind)
        members = cast("list[bytes]", await self.client.zrange(key, 0, -1))
        ids = [m.decode() for m in members]
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys(job_id)[0])
            raws = await pipe.execute()
        running: list[Job] = []
        gone: list[str] = []
        for job_id, raw in zip(ids, raws):
            job = Job.from_hash(job_id, raw) if raw else None
            if job is None or job.finished:
                gone.append(job_id)
            else:
                running.append(job)
        if gone:
            await self.client.zrem(key, *gone)
        return running

    # -- documents ----------------------------------------------------------------------

    def pack(self, document: Mapping[str, Any]) -> bytes:
        """A document as stored: its JSON, zstd-compressed (one frame, content size recorded)."""
        return self._compress.compress(json.dumps(document, separators=(",", ":"),
                                                  ensure_ascii=False).encode())

    def unpack(self, blob: bytes) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self._decompress.decompress(blob))
        return document


def stored_request(request: Body | Mapping[str, Any]) -> dict[str, Any]:
    """The request as a job keeps it: ``headers`` (top level and in scrapeOptions) removed."""
    if isinstance(request, Body):
        return request.stored()
    body = {k: v for k, v in request.items() if k != "headers"}
    if isinstance(body.get("scrapeOptions"), Mapping):
        body["scrapeOptions"] = {k: v for k, v in body["scrapeOptions"].items() if k != "headers"}
    return body
