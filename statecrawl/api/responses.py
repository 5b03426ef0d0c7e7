"""Response bodies, shaped as the Firecrawl SDKs parse them.

What the SDKs (firecrawl-py 4.54.0) rely on, and these builders keep:

* a document's ``metadata.statusCode`` is an int; ``proxyUsed`` only
  ``basic`` / ``stealth`` and ``cacheState`` only ``hit`` / ``miss`` (the v2
  SDK's models reject anything else); ``links`` is a list of strings;
* a status page always has ``creditsUsed`` (int) and ``expiresAt`` (ISO-8601,
  the v1 SDK requires both); ``next`` is *absent* rather than null when there
  is no next page (the v1 SDK tests ``'next' in body``);
* a failed job is still ``success: true`` with ``status: "failed"``;
* start answers ``{success, id, url}``: ``url`` (the status URL) is required;
* v2 map answers ``links: [{url, title?, description?}]``, v1 ``links: [str]``;
* an active crawl needs a string ``teamId``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from statecrawl.api.jobs import Job, Page

__all__ = [
    "NOT_FOUND", "Document", "DocumentMetadata", "active_body", "document_from_page",
    "errors_body", "iso", "map_body", "start_body", "status_body", "status_url",
]

NOT_FOUND = {"success": False, "error": "Job not found"}
TEAM_ID = "statecrawl"  # no teams here; the SDK wants a string


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class DocumentMetadata(_Out):
    source_url: str = Field(serialization_alias="sourceURL")
    url: str
    status_code: int
    title: str | None = None
    description: str | None = None
    language: str | None = None
    content_type: str | None = None
    scrape_id: str | None = None
    proxy_used: Literal["basic", "stealth"] = "basic"
    cache_state: Literal["hit", "miss"] | None = None
    error: str | None = None


class Document(_Out):
    markdown: str | None = None
    html: str | None = None
    raw_html: str | None = None
    links: list[str] | None = None
    screenshot: str | None = None
    warning: str | None = None
    metadata: DocumentMetadata

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def document_from_page(page: Mapping[str, Any], formats: Iterable[str], *, scrape_id: str | None = None,
                       unsupported: Sequence[str] = (), proxy: str = "basic",
                       cache: str | None = None) -> dict[str, Any]:
    """The API document of a statecrawl page item (:class:`statecrawl.output.items.Page` as a
    dict) with only the requested *formats*; *unsupported* formats become a warning."""
    wanted = set(formats)
    error = page.get("error")
    links = [link["url"] if isinstance(link, Mapping) else str(link) for link in page.get("links") or ()]
    doc = Document(
        markdown=page.get("markdown") if "markdown" in wanted else None,
        html=page.get("html") if "html" in wanted else None,
        raw_html=page.get("raw_html") if "rawHtml" in wanted else None,
        links=links if "links" in wanted else None,
        screenshot=page.get("screenshot") if "screenshot" in wanted else None,
        warning=(f"formats not supported by statecrawl: {', '.join(unsupported)}" if unsupported else None),
        metadata=DocumentMetadata(
            source_url=page["url"], url=page.get("final_url") or page["url"],
            status_code=int(page.get("status") or 0), title=page.get("title"),
            description=page.get("description"), language=page.get("language"),
            content_type=page.get("content_type"), scrape_id=scrape_id,
            proxy_used="stealth" if proxy == "stealth" else "basic",
            cache_state="hit" if cache == "hit" else "miss" if cache == "miss" else None,
            error=(error.get("message") or error.get("type")) if isinstance(error, Mapping) else error,
        ),
    )
    return doc.body()


def iso(moment: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``, as JavaScript's toISOString writes it."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def status_url(base: str, version: str, kind: str, job_id: str, skip: int | None = None,
               limit: int | None = None) -> str:
    """A job's status URL on *base* (the request's own ``scheme://host``), optionally a page of it.

    Deterministic, so a running job's repeated cursor is the very URL the client sent."""
    path = "crawl" if kind == "crawl" else "batch/scrape"
    url = f"{base.rstrip('/')}/{version}/{path}/{job_id}"
    query = {k: v for k, v in (("skip", skip), ("limit", limit)) if v is not None}
    return f"{url}?{urlencode(query)}" if query else url


def start_body(job_id: str, url: str, invalid_urls: Sequence[str] | None = None) -> dict[str, Any]:
    """The answer to a crawl or batch start; *url* is the job's status URL."""
    body: dict[str, Any] = {"success": True, "id": job_id, "url": url}
    if invalid_urls is not None:
        body["invalidURLs"] = list(invalid_urls)
    return body


def status_body(page: Page, next_url: str | None) -> dict[str, Any]:
    """A status page: the job's counters and one page of its documents."""
    job = page.job
    body: dict[str, Any] = {
        "success": True, "status": job.status, "completed": job.completed,
        "total": max(job.total, job.completed), "creditsUsed": job.credits_used,
        "expiresAt": iso(job.expires_at), "data": page.documents,
    }
    if next_url is not None:
        body["next"] = next_url
    return body  # no "error" key, even when failed: the v1 SDK would read it as success false


def errors_body(errors: Iterable[Mapping[str, Any]], robots_blocked: Iterable[str]) -> dict[str, Any]:
    """GET .../errors: failed pages (``id``, ``url``, ``error`` required) and robots-blocked URLs."""
    keep = ("id", "timestamp", "url", "code", "error")
    return {"errors": [{k: e[k] for k in keep if e.get(k) is not None} for e in errors],
            "robotsBlocked": list(robots_blocked)}


def map_body(links: Iterable[Mapping[str, Any] | str], version: str,
             warning: str | None = None) -> dict[str, Any]:
    """Map results at the top level: v2 objects ``{url, title?, description?}``, v1 strings;
    a *warning* (a sitemap that could not be read) only when there is one."""
    items = [{"url": x} if isinstance(x, str) else {k: x[k] for k in ("url", "title", "description")
                                                     if x.get(k) is not None} for x in links]
    body: dict[str, Any] = {"success": True,
                            "links": [x["url"] for x in items] if version == "v1" else items}
    if warning:
        body["warning"] = warning
    return body


def active_body(jobs: Iterable[Job],
                options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """GET /v2/crawl/active; *options* maps a job id to its stored request (optional)."""
    return {"success": True, "crawls": [
        {"id": job.id, "teamId": TEAM_ID, "url": job.url, "created_at": iso(job.created_at),
         "options": dict((options or {}).get(job.id, {}))} for job in jobs]}
