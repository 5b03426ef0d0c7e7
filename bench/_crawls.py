"""Figure 3 of ``bench/api.py``: a crawl through ``POST /v2/crawl`` against ``statecrawl crawl``.

Both rates are pages from the first page seen done to the end, over that
time, so process start-up is left out of both: the API side polls ``GET
/v2/crawl/{id}`` (job workers already running), ``statecrawl crawl`` is
polled through its crawl's Redis counters. Wall figures (from the POST,
from the command's start) are kept beside them.

The API side follows the crawl-executor contract: job workers are
``statecrawl worker --jobs K --redis-url URL``, started only when ``worker
--help`` lists ``--jobs``; a 501 from ``POST /v2/crawl`` is reported as
``{"available": False, "error": "501"}``.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from _procs import ROOT, Procs, base_env, http_json, statecrawl_argv, wait_log
from statecrawl.frontier.store import CrawlStore

__all__ = ["api_crawl", "statecrawl_crawl"]


# -- 3: crawls ----------------------------------------------------------------------------


def _jobs_supported() -> bool:
    out = subprocess.run(statecrawl_argv("worker", "--help"), env=base_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    return "--jobs" in out


def api_crawl(api: str, start: str, limit: int, procs: Procs, redis_url: str, tmp: Path,
              job_workers: int, per_worker: int) -> dict[str, Any]:
    names = []
    if _jobs_supported():
        for i in range(1, job_workers + 1):
            name = f"job-worker-{i}"
            procs.start(name, statecrawl_argv("worker", "--jobs", str(per_worker), "--redis-url",
                                              redis_url), base_env(), tmp)
            names.append(name)
        ready_by = time.monotonic() + 30  # Scrapy workers log this once they take requests
        for name in names:
            wait_log(procs.log(name), "Spider opened", max(0.0, ready_by - time.monotonic()),
                     procs.running[name])
            if procs.running[name].poll() is not None:
                return {"available": False, "error": f"{name} exited:\n{procs.tail(name)}"}
    try:
        body = {"url": start, "limit": limit, "scrapeOptions": {"formats": ["markdown"]}}
        posted = time.perf_counter()
        status, answer = http_json("POST", f"{api}/v2/crawl", body)
        if status == 501:
            return {"available": False, "error": "501"}
        if status != 200 or not isinstance(answer, dict) or not answer.get("id"):
            return {"available": False, "error": f"POST /v2/crawl answered {status}: {str(answer)[:300]}"}
        return _follow_crawl(api, answer["id"], posted, limit)
    finally:
        procs.stop(*names)


def _follow_crawl(api: str, job_id: str, posted: float, limit: int) -> dict[str, Any]:
    deadline = posted + 60 + limit / 5  # 5 pages/s at least, or it is reported as timed out
    first: tuple[float, int] | None = None
    state: dict[str, Any] = {}
    while time.perf_counter() < deadline:
        code, state = http_json("GET", f"{api}/v2/crawl/{job_id}?limit=1")
        now = time.perf_counter()
        if code != 200:
            return {"available": True, "error": f"GET status answered {code}: {str(state)[:300]}"}
        if first is None and state.get("completed", 0) > 0:
            first = (now, state["completed"])
        if state.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.1)
    else:
        http_json("DELETE", f"{api}/v2/crawl/{job_id}")
        return {"available": True, "error": f"not done after {deadline - posted:.0f} s "
                f"({state.get('completed')}/{state.get('total')}); cancelled"}
    end, done = time.perf_counter(), state.get("completed", 0)
    t_first, n_first = first or (posted, 0)
    read_started, docs = time.perf_counter(), 0
    url: str | None = f"{api}/v2/crawl/{job_id}?limit=1000"
    while url and docs <= limit:  # read every document back, as a client would
        code, page = http_json("GET", url, timeout=120)
        docs += len(page.get("data", [])) if code == 200 else 0
        url = page.get("next") if code == 200 else None
    return {"available": True, "status": state.get("status"), "completed": done,
            "total": state.get("total"), "documents_read": docs,
            "read_seconds": round(time.perf_counter() - read_started, 2),
            "wall_seconds": round(end - posted, 2), "first_page_s": round(t_first - posted, 2),
            "pages_per_s": round((done - n_first) / max(1e-9, end - t_first), 1),
            "wall_pages_per_s": round(done / (end - posted), 1)}


async def _poll_crawl(proc: subprocess.Popen[bytes], redis_url: str,
                      crawl_id: str) -> tuple[tuple[float, int] | None, float | None, dict[str, Any]]:
    """(time and count when a first page was done, time it was seen finished, last status)."""
    client = Redis.from_url(redis_url)
    store, first, end, status = CrawlStore(client, crawl_id), None, None, {}
    try:
        while proc.poll() is None:
            status = await store.status()
            if first is None and status["done"] > 0:
                first = (time.perf_counter(), status["done"])
            if end is None and status["state"] == "finished":
                end = time.perf_counter()
            await asyncio.sleep(0.1)
        return first, end, await store.status()
    finally:
        await client.aclose()


def statecrawl_crawl(start: str, limit: int, workers: int, procs: Procs, redis_url: str,
                     tmp: Path) -> dict[str, Any]:
    """``statecrawl crawl`` of *start* with *workers* workers, to the end (bounded)."""
    crawl_id = f"bench-{uuid.uuid4().hex[:8]}"
    cmd = statecrawl_argv("crawl", start, "--workers", str(workers), "--limit", str(limit),
                          "--crawl-id", crawl_id, "--redis-url", redis_url, "--out",
                          str(tmp / "crawl-out"), "--quiet")
    started = time.perf_counter()
    proc = procs.start("statecrawl-crawl", cmd, base_env(), tmp)
    try:
        first, end, status = asyncio.run(asyncio.wait_for(
            _poll_crawl(proc, redis_url, crawl_id), timeout=120 + limit / 5))
    except asyncio.TimeoutError:
        return {"error": f"not done after {120 + limit / 5:.0f} s; stopped"}
    finally:
        procs.stop("statecrawl-crawl", timeout=30)  # SIGTERM: the command stops its workers
    wall = time.perf_counter() - started
    end, done = end or time.perf_counter(), status["done"]
    t_first, n_first = first or (started, 0)
    return {"exit": proc.returncode, "state": status["state"], "done": done,
            "failed": status["failed"], "wall_seconds": round(wall, 2),
            "first_page_s": round(t_first - started, 2),
            "pages_per_s": round((done - n_first) / max(1e-9, end - t_first), 1),
            "wall_pages_per_s": round(done / wall, 1)}
