"""scrapyd for real: the project deployed with scrapyd-deploy, crawling under scrapyd.

Two scrapyd instances on 127.0.0.1, each with its own config, eggs, logs and
dbs, and ``REDIS_URL`` (the session's redis-server) in its environment, which
its jobs inherit. Each gets the project with ``scrapyd-deploy env`` run in a
copy of the checkout, ``SCRAPYD_URL`` naming the instance: the repository's
``scrapy.cfg`` as is, as the README tells users to deploy. The jobs take
``spiders`` and ``settings`` from the egg. Their ``statecrawl`` is the egg's
too when statecrawl is installed editable (``make install``): scrapyd puts
the egg on ``sys.path``, and an editable install's finder comes after every
``sys.path`` entry (a regular install in site-packages comes first).

Every wait is bounded; a failure shows the tail of the job's log and of scrapyd's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.keys import CrawlKeys
from tests._scrapyd import PROJECT, Scrapyd, clean_env, copy_project, poll, run, venv_command
from tests.conftest import RedisServer, free_port, run_client

pytestmark = pytest.mark.slow

SPIDER = "site"
#: Upper bound of one job on the demo sites below (a job starts in seconds; they crawl in ~10 s).
JOB_TIMEOUT = 120.0


def deploy(project: Path, scrapyd: Scrapyd) -> subprocess.Popen[str]:
    """``SCRAPYD_URL=<scrapyd> scrapyd-deploy env --version 1`` in *project*, started."""
    env = clean_env(SCRAPYD_URL=scrapyd.url)
    return subprocess.Popen([venv_command("scrapyd-deploy"), "env", "--version", "1"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def scrapyds(tmp_path_factory: pytest.TempPathFactory,
             redis_server: RedisServer) -> Iterator[tuple[Scrapyd, Scrapyd]]:
    """Two scrapyd instances with the project deployed, their jobs on the session's Redis."""
    base = tmp_path_factory.mktemp("scrapyd")
    env = clean_env(REDIS_URL=redis_server.url, STATECRAWL_OUTPUT_DIR=str(base / "output"))
    instances = [Scrapyd(base / name, free_port(), env) for name in ("a", "b")]
    try:
        for scrapyd in instances:
            scrapyd.wait_ready()
        # Each from its own checkout: scrapyd-deploy builds in the project directory.
        deploys = [deploy(copy_project(base / f"project-{i}"), scrapyd) for i, scrapyd in enumerate(instances)]
        for scrapyd, proc in zip(instances, deploys):
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"scrapyd-deploy exited {proc.returncode}\n{out}\n{err[-3000:]}"
            answer = json.loads(out)
            assert answer["status"] == "ok" and answer["project"] == PROJECT, out
            assert SPIDER in scrapyd.call("listspiders.json", project=PROJECT)["spiders"]
        yield instances[0], instances[1]
    finally:
        for scrapyd in instances:
            scrapyd.stop()


@pytest.fixture(autouse=True)
def _no_job_left(scrapyds: tuple[Scrapyd, Scrapyd]) -> Iterator[None]:
    """A failed test's jobs are killed, so the next test's jobs start (max_proc = 1)."""
    yield
    for scrapyd in scrapyds:
        scrapyd.kill_jobs()


def statecrawl(*args: str, redis_url: str, cwd: Path) -> str:
    """The ``statecrawl`` command on *redis_url*: its stdout."""
    return run([venv_command("statecrawl"), *args, "--redis-url", redis_url], cwd=cwd, timeout=120).stdout


def export(redis_url: str, crawl_id: str, out: Path) -> list[dict[str, Any]]:
    """``statecrawl export``: the items of ``pages.jsonl``."""
    statecrawl("export", crawl_id, "--out", str(out), redis_url=redis_url, cwd=out.parent)
    lines = (out / "pages.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def assert_whole_crawl(items: list[dict[str, Any]], site: DemoSite, logs: str) -> None:
    """Every URL of the demo site's contract has exactly one item; every page is a 200."""
    urls = [item["url"] for item in items]
    assert len(urls) == len(set(urls)), f"duplicate items: {sorted(urls)}\n{logs}"
    assert set(urls) == site.expected_urls(), f"{sorted(set(urls) ^ site.expected_urls())}\n{logs}"
    pages = {item["url"]: item for item in items}
    assert all(pages[url]["status"] == 200 for url in site.page_urls()), logs


def crawl_status(redis_url: str, crawl_id: str, cwd: Path) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(statecrawl("status", crawl_id, "--json", redis_url=redis_url, cwd=cwd))
    return status


def leases(redis_url: str, crawl_id: str) -> dict[str, str]:
    """The crawl's leases hash: request id -> ``"<worker> <score>"``."""
    async def read(client: AsyncRedis) -> dict[str, str]:
        raw = await client.hgetall(CrawlKeys(crawl_id).leases)
        return {k.decode(): v.decode() for k, v in raw.items()}

    return run_client(redis_url, read)


def workers(redis_url: str, crawl_id: str) -> set[str]:
    async def read(client: AsyncRedis) -> set[str]:
        return {w.decode() for w in await client.zrange(CrawlKeys(crawl_id).workers, 0, -1)}

    return run_client(redis_url, read)


def watchdogs_of(pid: int) -> list[int]:
    """The live watchdog processes (:mod:`statecrawl.frontier._watchdog`) that process *pid* started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            cmdline = (entry / "cmdline").read_bytes() if stat else b""
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z" and b"_watchdog.py" in cmdline:
            found.append(int(entry.name))
    return found


def test_deploy_schedule_and_export(scrapyds: tuple[Scrapyd, Scrapyd], redis_url: str, crawl_id: str,
                                    site: DemoSite, tmp_path: Path) -> None:
    """schedule.json crawls the demo site; ``statecrawl export`` then has every page once."""
    scrapyd = scrapyds[0]
    job = scrapyd.schedule(SPIDER, url=f"{site.url}/", crawl_id=crawl_id)
    scrapyd.wait_finished(SPIDER, job, JOB_TIMEOUT)
    log = scrapyd.job_log(SPIDER, job)
    assert scrapyd.broken(SPIDER, job) == [], log
    assert scrapyd.stats(SPIDER, job).get("finish_reason") == "'finished'", log
    status = crawl_status(redis_url, crawl_id, tmp_path)
    assert status["state"] == "finished" and status["queued"] == status["in_flight"] == 0, f"{status}\n{log}"
    items = export(redis_url, crawl_id, tmp_path / "export")
    assert_whole_crawl(items, site, log)
    assert len(items) == status["done"], log
    assert list((tmp_path / "export" / "markdown").rglob("*.md")), "no Markdown exported"


def test_two_instances_share_one_crawl(scrapyds: tuple[Scrapyd, Scrapyd], redis_url: str, crawl_id: str,
                                       tmp_path: Path) -> None:
    """One crawl id scheduled on two scrapyds: both work on it, and each page is fetched once overall.

    The site answers slowly, so the crawl lasts longer than the jobs take to start:
    300 pages, a tree 9 links deep, wider than one worker's leases. A worker
    timeout of 10 s: with the default 1 s, a heartbeat late on a loaded test
    machine has the other worker reclaim live leases (a fetch twice, by design).
    """
    patient = {"STATECRAWL_WORKER_TIMEOUT": "10"}
    with DemoSite(pages=300, delay=0.5) as slow:
        jobs = [(scrapyd, scrapyd.schedule(SPIDER, patient, url=f"{slow.url}/", crawl_id=crawl_id))
                for scrapyd in scrapyds]
        for scrapyd, job in jobs:
            scrapyd.wait_finished(SPIDER, job, JOB_TIMEOUT)
        hits = dict(slow.hits)
    logs = "\n".join(scrapyd.job_log(SPIDER, job) for scrapyd, job in jobs)
    for scrapyd, job in jobs:
        assert scrapyd.broken(SPIDER, job) == [], logs
    stats = [scrapyd.stats(SPIDER, job) for scrapyd, job in jobs]
    logs += "\n" + "\n".join(f"{name}: {[s.get(name, 0) for s in stats]}" for name in (
        "statecrawl/reclaimed", "statecrawl/forgotten", "statecrawl/released", "retry/count"))
    scraped = [s.get("item_scraped_count", 0) for s in stats]
    assert all(count > 0 for count in scraped), f"a job did no work: {scraped}\n{logs}"
    items = export(redis_url, crawl_id, tmp_path / "export")
    assert_whole_crawl(items, slow, logs)
    assert sum(scraped) == len(items), f"{scraped} items scraped for {len(items)} URLs\n{logs}"
    twice = {url: hits.get(url.removeprefix(slow.url), 0) for url in slow.page_urls()}
    assert all(n == 1 for n in twice.values()), {url: n for url, n in twice.items() if n != 1}
    assert crawl_status(redis_url, crawl_id, tmp_path)["state"] == "finished"


def test_cancel_gives_the_leases_back(scrapyds: tuple[Scrapyd, Scrapyd], redis_url: str, crawl_id: str,
                                      tmp_path: Path) -> None:
    """cancel.json stops a job gracefully: its leases are back in the frontier when it ends.

    The crawl is left running, not finished or cancelled: the other instance,
    scheduled with the same crawl id, completes it.
    """
    first, second = scrapyds
    with DemoSite(pages=300, delay=0.5) as slow:
        job = first.schedule(SPIDER, url=f"{slow.url}/", crawl_id=crawl_id)
        # cancelled with plenty in flight and buffered (the tree widens by a level per 0.5 s)
        def plenty() -> dict[str, str] | None:
            found = leases(redis_url, crawl_id)
            return found if len(found) >= 10 else None

        held = poll(plenty, JOB_TIMEOUT, 0.1, lambda: f"the job leased little\n{first.job_log(SPIDER, job)}")
        worker = {value.split(" ", 1)[0] for value in held.values()}
        assert len(worker) == 1, held
        # The job may import statecrawl from the zipped egg (it comes before an editable
        # install on sys.path): its watchdog must start all the same.
        pid = next(j["pid"] for j in first.call("listjobs.json", project=PROJECT)["running"] if j["id"] == job)
        poll(lambda: watchdogs_of(pid) or None, 10, 0.2,
             lambda: f"job {job} (pid {pid}) has no watchdog\n{first.job_log(SPIDER, job)}")
        assert first.cancel(job) == "running"
        first.wait_finished(SPIDER, job, 30)
        # at once: nothing reclaims leases between the job's end and this read
        left = leases(redis_url, crawl_id)
        log = first.job_log(SPIDER, job)
        assert not any(value.split(" ", 1)[0] in worker for value in left.values()), f"{left}\n{log}"
        assert not worker & workers(redis_url, crawl_id), log
        assert first.broken(SPIDER, job) == [], log
        stats = first.stats(SPIDER, job)
        assert stats.get("finish_reason") == "'shutdown'", log
        assert stats.get("statecrawl/released", 0) > 0, log
        status = crawl_status(redis_url, crawl_id, tmp_path)
        assert status["state"] == "interrupted" and status["in_flight"] == 0 and status["queued"] > 0, status
        # given back by the job itself, not reclaimed after its death by its watchdog
        assert int(status["stats"].get("released", 0)) > 0 == int(status["stats"].get("reclaimed", 0)), status

        rerun = second.schedule(SPIDER, url=f"{slow.url}/", crawl_id=crawl_id)
        second.wait_finished(SPIDER, rerun, JOB_TIMEOUT)
        logs = f"{log}\n{second.job_log(SPIDER, rerun)}"
        assert second.broken(SPIDER, rerun) == [], logs
        items = export(redis_url, crawl_id, tmp_path / "export")
    assert_whole_crawl(items, slow, logs)
    assert crawl_status(redis_url, crawl_id, tmp_path)["state"] == "finished"
