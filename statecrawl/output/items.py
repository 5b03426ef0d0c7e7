"""The items statecrawl produces: a :class:`Page` for every page, fetched or failed, and a
:class:`Reply` for a service request (pushed to its caller, never stored)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Page", "Reply"]


@dataclass
class Page:
    """One page of a crawl. ``error`` is ``None`` or ``{"type": ..., "message": ...}``."""

    url: str
    crawl_id: str
    fetched_at: str
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    title: str | None = None
    description: str | None = None
    language: str | None = None
    canonical: str | None = None
    open_graph: dict[str, str] = field(default_factory=dict)
    twitter: dict[str, str] = field(default_factory=dict)
    published: str | None = None
    author: str | None = None
    markdown: str = ""  # the "markdown" format (the default)
    html: str | None = None  # the "html" format: cleaned main-content HTML
    raw_html: str | None = None  # the "raw_html" format: the page as fetched
    links: list[dict[str, str]] = field(default_factory=list)  # {"url", "text"}, deduplicated
    renderer: str = "http"  # "http" or "browser": what fetched the page
    screenshot: str | None = None  # a full-page PNG's path (rendered pages, -a screenshot=true)
    depth: int = 0
    error: dict[str, Any] | None = None


@dataclass
class Reply:
    """The answer to a service request (:mod:`statecrawl.frontier.service`).

    :class:`statecrawl.output.pipelines.ServiceReplies` pushes ``data`` (plain
    JSON) to the caller waiting on ``request_id`` and drops the item: it is
    neither stored in the crawl's ``items`` nor written to files or feeds.
    """

    request_id: str
    data: dict[str, Any]
