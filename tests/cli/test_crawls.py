"""``statecrawl list`` (with Redis bytes) and ``statecrawl purge`` (statecrawl.cli.crawls).

Quick commands run in-process through ``main([...])``; the forced purge of a
crawl that a real ``scrapy crawl site`` worker is running, and the sweep a
starting worker runs, use real subprocesses. All against the session's
private redis-server.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from statecrawl.cli import main
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.keys import CRAWLS_KEY, CrawlKeys
from statecrawl.frontier.lifecycle import crawl_pattern
from statecrawl.frontier.store import CrawlStore
from tests.conftest import RedisServer, run_client, scrapy_crawl, worker_env
from tests.frontier.test_chaos import Worker, wait_until
from tests.frontier.test_lifecycle import _finished, _populate


def _keys(server: RedisServer, crawl_id: str) -> set[bytes]:
    client = server.client()
    try:
        return set(client.scan_iter(match=crawl_pattern(crawl_id), count=1000))
    finally:
        client.close()


def _memory(server: RedisServer, crawl_id: str) -> int:
    client = server.client()
    try:
        return sum(int(client.memory_usage(key, samples=5) or 0)
                   for key in client.scan_iter(match=crawl_pattern(crawl_id)))
    finally:
        client.close()


def _run(redis_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--redis-url", redis_url, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_bytes_that_match_memory_usage(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    small, big = f"{crawl_id}-small", f"{crawl_id}-big"
    run_client(redis_server.url, lambda c: _populate(c, small, job=False))
    run_client(redis_server.url, lambda c: _populate(c, big, big=5000, job=False))
    code, out, _ = _run(redis_server.url, capsys, "list", "--json")
    assert code == 0
    rows = {r["crawl_id"]: r for r in json.loads(out)}
    for cid in (small, big):
        expected = _memory(redis_server, cid)
        assert rows[cid]["bytes_complete"] is True
        assert abs(rows[cid]["bytes"] - expected) <= expected * 0.01, (cid, rows[cid], expected)
        assert rows[cid]["state"] == "interrupted" and rows[cid]["queued"] == 5
    assert rows[big]["bytes"] > 5000 * 200 > rows[small]["bytes"]

    code, out, _ = _run(redis_server.url, capsys, "list")
    assert code == 0 and out.splitlines()[0].split()[-1] == "BYTES"
    line = next(line for line in out.splitlines() if line.startswith(big + " "))
    assert line.endswith("MiB") and float(line.split()[-2]) == pytest.approx(
        rows[big]["bytes"] / 2**20, abs=0.06)
    code, out, _ = _run(redis_server.url, capsys, "list", "--no-bytes")
    assert code == 0 and "BYTES" not in out and "MiB" not in out


def test_status_shows_the_crawls_bytes(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    run_client(redis_server.url, lambda c: _populate(c, crawl_id, job=False))
    code, out, _ = _run(redis_server.url, capsys, "status", crawl_id, "--json")
    assert code == 0 and json.loads(out)["redis_bytes"] == _memory(redis_server, crawl_id)


def test_purge_dry_run_then_purge(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    run_client(redis_server.url, lambda c: _populate(c, crawl_id))
    run_client(redis_server.url, lambda c: _populate(c, crawl_id + "b", job=False))
    keys = _keys(redis_server, crawl_id)
    size = _memory(redis_server, crawl_id)
    code, out, err = _run(redis_server.url, capsys, "purge", crawl_id, "--dry-run")
    assert code == 0, err
    assert out.startswith(f"would purge crawl {crawl_id} (running): {len(keys)} keys, ")
    assert f"({size} bytes)" in out and f"sc:{{{crawl_id}}}:meta" in out
    assert "and its entry in sc:crawls" in out and "and its entry in sc:api:hooks" in out
    assert _keys(redis_server, crawl_id) == keys

    code, out, err = _run(redis_server.url, capsys, "purge", crawl_id)
    assert code == 0, err
    assert out.startswith(f"purged crawl {crawl_id} (running): {len(keys)} keys, ")
    assert f"freed ({size} bytes)" in out
    assert _keys(redis_server, crawl_id) == set()
    assert len(_keys(redis_server, crawl_id + "b")) == len(keys) - 2  # the crawl whose id it prefixes
    # (the same keys but the API job's two)
    code, out, _ = _run(redis_server.url, capsys, "list", "--no-bytes")
    assert crawl_id + " " not in out and crawl_id + "b " in out


def test_purge_errors_tell_the_truth(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(redis_server.url, capsys, "purge", crawl_id)
    assert code == 1 and err.strip() == (f"statecrawl: error: no crawl {crawl_id!r} in this Redis: "
                                         "no key and no index names it")
    code, _, err = _run(redis_server.url, capsys, "purge", "a*b")
    assert code == 2 and "invalid crawl id 'a*b'" in err
    code, _, err = _run(redis_server.url, capsys, "purge")
    assert code == 2 and "give a crawl id, or --finished-before" in err
    code, _, err = _run(redis_server.url, capsys, "purge", "--finished-before", "soon")
    assert code == 2 and "expected a duration" in err

    async def live(client: object) -> None:
        store = await _populate(client, crawl_id, job=False)  # type: ignore[arg-type]
        await store.heartbeat("w1", 60)

    run_client(redis_server.url, live)
    keys = _keys(redis_server, crawl_id)
    code, _, err = _run(redis_server.url, capsys, "purge", crawl_id)
    assert code == 1 and f"crawl {crawl_id!r} is running (1 live worker" in err and "--force" in err
    code, out, err = _run(redis_server.url, capsys, "purge", crawl_id, "--dry-run")
    assert code == 1 and "would purge" in out and "1 live worker: a purge would be refused" in err
    assert _keys(redis_server, crawl_id) == keys  # nothing deleted


def test_purge_finished_before(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    old, recent, running = f"{crawl_id}-old", f"{crawl_id}-recent", f"{crawl_id}-running"
    run_client(redis_server.url, lambda c: _finished(c, old, 7200))
    run_client(redis_server.url, lambda c: _finished(c, recent, 60))
    run_client(redis_server.url, lambda c: _populate(c, running))
    code, out, _ = _run(redis_server.url, capsys, "purge", "--finished-before", "1h", "--dry-run")
    assert code == 0 and f"would purge crawl {old}:" in out and recent not in out
    assert _keys(redis_server, old)
    code, out, _ = _run(redis_server.url, capsys, "purge", "--finished-before", "1h")
    assert code == 0 and f"purged crawl {old}:" in out and recent not in out and running not in out
    assert not _keys(redis_server, old)
    assert _keys(redis_server, recent) and _keys(redis_server, running)


def test_list_sweeps_finished_crawls_past_the_ttl(
    redis_server: RedisServer, crawl_id: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, recent = f"{crawl_id}-old", f"{crawl_id}-recent"
    run_client(redis_server.url, lambda c: _finished(c, old, 7200))
    run_client(redis_server.url, lambda c: _finished(c, recent, 60))
    monkeypatch.setenv("STATECRAWL_FINISHED_TTL", "3600")
    code, out, err = _run(redis_server.url, capsys, "list")
    assert code == 0 and old in err and "STATECRAWL_FINISHED_TTL" in err
    assert old not in out and recent in out
    assert not _keys(redis_server, old) and _keys(redis_server, recent)
    monkeypatch.setenv("STATECRAWL_FINISHED_TTL", "soon")
    code, _, err = _run(redis_server.url, capsys, "list")
    assert code == 2 and "STATECRAWL_FINISHED_TTL='soon'" in err


@pytest.mark.slow
def test_forced_purge_stops_a_live_worker_and_leaves_nothing(
    redis_server: RedisServer, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    client = redis_server.client()
    k = CrawlKeys(crawl_id)
    with DemoSite(pages=300, delay=0.05) as site:
        worker = Worker(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}"],
                        worker_env(redis_server.url, tmp_path / "out"), tmp_path / "w.log")
        try:
            wait_until(lambda: client.hlen(k.items) >= 5, 60, "the crawl runs")
            code, _, err = _run(redis_server.url, capsys, "purge", crawl_id)
            assert code == 1 and "is running (1 live worker" in err
            started = time.monotonic()
            code, out, err = _run(redis_server.url, capsys, "purge", crawl_id, "--force")
            took = time.monotonic() - started
            assert code == 0, out + err
            assert f"purged crawl {crawl_id} (running)" in out
            assert "1 live worker lost the crawl" in out
            assert worker.proc.wait(60) == 1, worker.log()
        finally:
            worker.stop()
    log = worker.text()
    assert "is gone from Redis" in log and "Spider closed (state_lost)" in log, worker.log()
    assert "Traceback" not in log, worker.log()
    assert took < 20
    assert _keys(redis_server, crawl_id) == set(), worker.log()
    assert not client.sismember(CRAWLS_KEY, crawl_id)
    client.close()


@pytest.mark.slow
def test_a_starting_worker_sweeps_old_finished_crawls(
    redis_server: RedisServer, crawl_id: str, tmp_path: Path,
) -> None:
    old, recent = f"{crawl_id}-old", f"{crawl_id}-recent"
    run_client(redis_server.url, lambda c: _finished(c, old, 7200))
    run_client(redis_server.url, lambda c: _finished(c, recent, 60))
    with DemoSite(pages=5) as site:
        proc = scrapy_crawl(["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}",
                             "-s", "STATECRAWL_FINISHED_TTL=3600"],
                            worker_env(redis_server.url, tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # (other tests' crawls may be swept too: the session's Redis is shared)
    assert re.search(r"purged \d+ crawls? finished more than 3600 s ago \([^)]*" + re.escape(old),
                     proc.stderr), proc.stderr[-3000:]
    assert not _keys(redis_server, old) and _keys(redis_server, recent)
    status = run_client(redis_server.url, lambda c: CrawlStore(c, crawl_id).status())
    assert status["state"] == "finished"  # its own crawl, finished now, was not swept
