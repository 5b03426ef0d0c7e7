"""The live crawl page on ``statecrawl serve``: the crawl list, and one crawl as it runs.

==============================  ===========================================================
``GET /crawls``                 the crawl list (an HTML shell: no API key needed)
``GET /crawls/{id}``            one crawl's live page (an HTML shell: no API key needed)
``GET /static/live/{name}``     the pages' scripts, style sheet and charting library (uPlot)
``GET /crawls.json``            every crawl in ``sc:crawls``: state, counts, created time
``GET /crawls/{id}/data``       the crawl's :func:`statecrawl.observe.crawl_snapshot`
                                (``?top=N`` hosts, 10 by default, at most 50)
``POST /crawls/{id}/cancel``    cancel the crawl: 404 for an unknown crawl, 409 when it has
                                already ended
==============================  ===========================================================

**Nothing read from Redis is ever in the HTML.** The shells and the static files
are package data (``static/``), the same bytes for every crawl; the pages' scripts
fetch the JSON routes every 2 s and build the DOM with ``textContent`` only: host
names, URLs and error messages are written by whoever the crawl fetched. Every
answer carries a strict Content-Security-Policy (scripts, styles and requests from
this origin only, no inline script, no framing).

**API keys** (:class:`statecrawl.api._http.ApiKeys`): a browser navigating to a page
cannot send a Bearer header, so the shells and static files are open
(:func:`statecrawl.api._http.is_open`); the JSON routes and the cancel need the key.
When a data request answers 401, the page asks for the key (a small form), keeps it
in ``sessionStorage`` (gone when the tab closes) and sends it as
``Authorization: Bearer`` on its requests.

**Cancel.** A crawl with a crawl job (job id == crawl id: a ``POST /v2/crawl``) is
cancelled as ``DELETE /v2/crawl/{id}`` cancels it
(:func:`statecrawl.api.worker.cancel_crawl_job`: the job, its crawl, the keys'
expiry); any other crawl (``statecrawl crawl``, ``scrapy crawl``) as ``statecrawl
cancel`` does, by one script (``lua/crawl_cancel.lua``) that leaves a crawl that
has ended as it is (409).
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statecrawl.api._http import error
from statecrawl.api.jobs import Job, JobStore
from statecrawl.api.worker import cancel_crawl_job
from statecrawl.exceptions import ConfigError
from statecrawl.frontier.keys import CRAWLS_KEY
from statecrawl.frontier.store import CrawlStore
from statecrawl.observe import crawl_snapshot

__all__ = ["CSP", "MAX_CRAWLS", "asset", "live_routes"]

#: The pages' Content-Security-Policy: everything from this origin, nothing inline.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
#: Crawls ``/crawls.json`` reads at most (the newest first).
MAX_CRAWLS = 500
_TOP_HOSTS, _MAX_TOP_HOSTS = 10, 50
_DEAD_LETTERS = 10
_ENDED = ("finished", "cancelled")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
          "LICENSE": "text/plain; charset=utf-8"}
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
_NOT_FOUND = {"success": False, "error": "Crawl not found"}


def live_routes() -> list[BaseRoute]:
    """The live page's routes (module docstring), for :func:`statecrawl.api.app.create_app`."""
    return [
        Route("/crawls", _list_page, methods=["GET"]),
        Route("/crawls.json", _list_data, methods=["GET"]),
        Route("/crawls/{id}", _crawl_page, methods=["GET"]),
        Route("/crawls/{id}/data", _crawl_data, methods=["GET"]),
        Route("/crawls/{id}/cancel", _cancel, methods=["POST"]),
        Route("/static/live/{name}", _asset, methods=["GET"]),
    ]


@lru_cache(maxsize=32)
def asset(name: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of the packaged file ``static/<name>``, or None if there is none."""
    media = next((t for end, t in _TYPES.items() if name.endswith(end)), None)
    if media is None or "/" in name or name.startswith("."):
        return None
    path = resources.files("statecrawl.api").joinpath("static").joinpath(name)
    return (path.read_bytes(), media) if path.is_file() else None


def _file(name: str, cache: str) -> Response:
    found = asset(name)
    if found is None:
        return error(404, "Not found")
    body, media = found
    return Response(body, media_type=media, headers={**_HEADERS, "Cache-Control": cache})


async def _list_page(request: Request) -> Response:
    return _file("crawls.html", "no-cache")


async def _crawl_page(request: Request) -> Response:
    return _file("crawl.html", "no-cache")  # the same shell for every id: the script reads it


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name.endswith(".html"):  # the shells are served at their own paths only
        return error(404, "Not found")
    return _file(name, "public, max-age=300")


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_HEADERS, "Cache-Control": "no-store"})


def _jobs(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _crawl_store(client: Redis, crawl_id: str) -> CrawlStore | None:
    try:
        return CrawlStore(client, crawl_id)
    except ConfigError:  # not a crawl id: no such crawl
        return None


def _shown_state(state: str, workers: int) -> str:
    """``interrupted`` for a running crawl that no live worker serves (as ``statecrawl list``)."""
    return "interrupted" if state == "running" and not workers else state


async def _job(jobs: JobStore, crawl_id: str) -> Job | None:
    job = await jobs.get(crawl_id)
    return job if job is not None and job.kind == "crawl" else None


async def _row(jobs: JobStore, store: CrawlStore) -> dict[str, Any] | None:
    if not await store.exists():  # expired with its API job, or purged
        return None
    s = await store.status()
    job = await _job(jobs, store.crawl_id)
    return {"crawl_id": store.crawl_id, "state": _shown_state(s["state"], s["workers"]),
            "spider": s["spider"], "start_url": s["start_url"], "created_at": s["created_at"],
            "finished_at": s["finished_at"], "queued": s["queued"], "in_flight": s["in_flight"],
            "done": s["done"], "failed": s["failed"], "workers": s["workers"],
            "limit": s["limit"], "job": None if job is None else job.status}


async def _list_data(request: Request) -> Response:
    jobs = _jobs(request)
    stores = [store for raw in await jobs.client.smembers(CRAWLS_KEY)
              if (store := _crawl_store(jobs.client, raw.decode(errors="replace"))) is not None]
    stores.sort(key=lambda s: s.crawl_id)
    rows = []
    for start in range(0, min(len(stores), MAX_CRAWLS), 50):  # 50 crawls read at once
        found = await asyncio.gather(*(_row(jobs, s) for s in stores[start:start + 50]))
        rows += [row for row in found if row is not None]
    rows.sort(key=lambda r: (-(r["created_at"] or 0), r["crawl_id"]))
    return _json({"success": True, "crawls": rows, "truncated": len(stores) > MAX_CRAWLS})


def _top(request: Request) -> int:
    raw = request.query_params.get("top", "")
    return min(int(raw), _MAX_TOP_HOSTS) if raw.isdigit() and int(raw) > 0 else _TOP_HOSTS


async def _crawl_data(request: Request) -> Response:
    jobs = _jobs(request)
    store = _crawl_store(jobs.client, request.path_params["id"])
    if store is None or not await store.exists():
        return _json(_NOT_FOUND, 404)
    snap = await crawl_snapshot(store, top=_top(request), dead=_DEAD_LETTERS)
    job = await _job(jobs, store.crawl_id)
    snap["shown_state"] = _shown_state(snap["state"], len(snap["workers"]))
    snap["job"] = None if job is None else {"status": job.status, "docs": job.docs,
                                            "total": job.total, "limit": job.limit}
    return _json({"success": True, "crawl": snap})


async def _cancel(request: Request) -> Response:
    jobs = _jobs(request)
    crawl_id = request.path_params["id"]
    if await _job(jobs, crawl_id) is not None:  # an API crawl job: DELETE /v2/crawl/{id}'s way
        change = await cancel_crawl_job(jobs, crawl_id)
        if change is None:
            return _json(_NOT_FOUND, 404)
        if not change.changed:
            return _json({"success": False, "error": f"Crawl is already {change.status}",
                          "status": change.status}, 409)
        return _json({"success": True, "status": "cancelled", "job": True})
    store = _crawl_store(jobs.client, crawl_id)
    raw = None if store is None else await _cancel_script(jobs.client)(keys=[store.keys.meta])
    if raw is None:
        return _json(_NOT_FOUND, 404)
    state = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    if state in _ENDED:
        return _json({"success": False, "error": f"Crawl is already {state}", "status": state}, 409)
    return _json({"success": True, "status": "cancelled", "job": False})


def _cancel_script(client: Redis) -> Any:
    """``lua/crawl_cancel.lua`` on *client*: cancels a crawl only if it has not ended."""
    source = resources.files("statecrawl.api").joinpath("lua", "crawl_cancel.lua").read_text()
    return client.register_script(source)
