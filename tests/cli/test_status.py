"""``statecrawl status``: the counters, progress bar, rates, workers and hosts of one crawl,
read once or refreshed with ``--watch`` while a real crawl runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from statecrawl.cli import main
from statecrawl.demo.site import DemoSite
from tests.cli.test_cli import cli
from tests.conftest import worker_env


def test_status_shows_progress_rates_hosts_and_the_last_minute(
        redis_url: str, crawl_id: str, site: DemoSite, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    done = cli("crawl", site.url + "/", "--out", str(tmp_path / "out"), "--limit", "8",
               "--crawl-id", crawl_id, "--quiet", redis_url=redis_url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    capsys.readouterr()
    assert main(["--redis-url", redis_url, "status", crawl_id, "--json", "--top", "3"]) == 0
    status: dict[str, Any] = json.loads(capsys.readouterr().out)
    # the fields of earlier versions keep their meaning
    assert status["state"] == "finished" and status["workers"] == 0 == len(status["live_workers"])
    assert status["done"] >= 6 and status["limit"] == 8 and status["progress"] == 1.0
    assert status["pages_per_s"] == status["rates"]["pages_per_s"] and status["pages_per_s"]["1m"] > 0
    host = site.url.split("//")[1].split(":")[0]
    [row] = status["hosts"]
    assert row["host"] == host and row["fetches_1m"] == status["last_minute"]["fetches"] >= 8
    assert status["last_minute"]["status"]["2xx"] >= 6 and "series" not in status

    assert main(["--redis-url", redis_url, "status", crawl_id]) == 0
    text = capsys.readouterr().out.splitlines()
    assert f"progress           [{'#' * 30}] 100.0% of 8 requests" in text
    assert any(line.startswith("last_minute") and "2xx" in line for line in text)
    assert any(line.startswith(host) for line in text), text


@pytest.mark.slow
def test_watch_redraws_while_the_crawl_runs_and_exits_when_it_ends(
        redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with DemoSite(pages=60) as slow:  # a polite crawl: one request per host each 0.2 s (~8 s)
        log = (tmp_path / "crawl.log").open("w")  # not a pipe: nobody reads it while it runs
        crawl = subprocess.Popen(
            [sys.executable, "-m", "statecrawl.cli", "--redis-url", redis_url, "crawl", slow.url + "/",
             "--out", str(tmp_path / "out"), "--limit", "40", "--delay", "0.2",
             "--host-concurrency", "1", "--crawl-id", crawl_id],
            cwd=tmp_path, env=worker_env(redis_url), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60  # the crawl exists once its first worker joined
            while main(["--redis-url", redis_url, "status", crawl_id, "--json"]) != 0:
                assert crawl.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            capsys.readouterr()
            watch = cli("status", crawl_id, "--watch", "0.5", "--json", redis_url=redis_url,
                        tmp_path=tmp_path, timeout=150)
            crawled = crawl.wait(timeout=60)
        finally:
            if crawl.poll() is None:
                crawl.kill()
                crawl.wait()
            log.close()
    assert crawled == 0, (tmp_path / "crawl.log").read_text()[-2000:]
    assert watch.returncode == 0, watch.stderr[-2000:]
    frames = [json.loads(line) for line in watch.stdout.splitlines() if line.strip()]
    assert len(frames) >= 3 and frames[-1]["state"] == "finished"
    assert [f["done"] for f in frames] == sorted(f["done"] for f in frames)
    assert frames[-1]["done"] > frames[0]["done"]
    running = [f for f in frames if f["state"] == "running" and f["live_workers"]]
    assert running, [f["state"] for f in frames]
    worker = running[-1]["live_workers"][0]
    assert worker["heartbeat_age"] < 5 and worker["pid"] > 0 and worker["host"]
    # the host's backlog (a frame before the first links were found lists no host)
    assert max(f["hosts"][0]["queued"] for f in running if f["hosts"]) > 0
    shares = [f["progress"] for f in frames]  # --limit: the share of it handled
    assert shares == sorted(shares) and shares[-1] == 1.0
    assert any(0 < share < 1 for share in shares), shares
    assert all(f["politeness"]["polite"] and f["politeness"]["delay"] == 0.2 for f in running)
