"""Tests for statecrawl.cli (and the progress line in statecrawl.cli.progress).

Fast commands (status, export, cancel, list, errors) run in-process through
``main([...])``; ``crawl`` and ``worker`` run as real subprocesses against the
session's private redis-server (never the machine's Redis on 6379), with every
output and data dir under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from statecrawl.cli import build_parser, default_crawl_id, main
from statecrawl.cli.progress import Progress
from statecrawl.cli.workers import spider_argv
from statecrawl.demo.site import DemoSite
from statecrawl.frontier.connection import connect
from statecrawl.frontier.store import CrawlStore
from statecrawl.output.files import markdown_relpath
from tests.conftest import free_port, worker_env


def cli(
    *args: str, redis_url: str, tmp_path: Path, wait: bool = True, timeout: float = 120, **env_extra: str,
) -> Any:
    """Run ``python -m statecrawl.cli --redis-url URL <args>`` in tmp_path."""
    cmd = [sys.executable, "-m", "statecrawl.cli", "--redis-url", redis_url,
           "--data-dir", str(tmp_path / "data"), *args]
    env = worker_env(redis_url, **env_extra)
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def status_json(redis_url: str, crawl_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--redis-url", redis_url, "status", crawl_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def page_of(item: dict[str, Any], base: str) -> str:
    """The page an item stands for: a 200 item for /redirect-in (if that request won the
    race to page 3, see DemoSite) is page 3's; a 301 item just records the redirect."""
    won = item["url"] == base + "/redirect-in" and item.get("status") == 200
    return str(item["final_url"]) if won else str(item["url"])


# -- crawl, status, export -------------------------------------------------------------


@pytest.mark.slow
def test_crawl_two_workers_then_status_and_export(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    proc = cli("crawl", site.url + "/", "--out", str(out), "--workers", "2", "--crawl-id", crawl_id,
               redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"crawl id: {crawl_id} (resume with --crawl-id {crawl_id})" in proc.stdout
    assert f"crawl {crawl_id} finished" in proc.stdout
    # failed pages are named by error type, with an example (the site has a 404, a 500
    # and an off-site redirect)
    assert re.search(r'\d+ pages, 3 failed \(HttpError: 2, e\.g\. "HTTP (404|500)"; '
                     r'OutOfScopeRedirect: 1, e\.g\. "redirects to http://localhost:', proc.stdout)
    assert "Traceback" not in proc.stderr
    assert (out / "logs" / "worker-1.log").stat().st_size > 0
    assert (out / "logs" / "worker-2.log").stat().st_size > 0
    assert list(out.glob(f"pages-{crawl_id}-*.jsonl"))

    status = status_json(redis_url, crawl_id, capsys)
    assert status["state"] == "finished"
    assert status["queued"] == status["in_flight"] == 0
    assert status["workers"] == 0
    for key in ("crawl_id", "seen", "start_url", "spider", "created_at", "finished_at", "stats"):
        assert key in status

    export = tmp_path / "export"
    assert main(["--redis-url", redis_url, "export", crawl_id, "--out", str(export)]) == 0
    assert "exported" in capsys.readouterr().out
    items = read_jsonl(export / "pages.jsonl")
    urls = [item["url"] for item in items]
    assert urls == sorted(urls) and len(urls) == len(set(urls))
    assert status["done"] == len(items)
    assert status["failed"] == sum(1 for item in items if item.get("error"))
    pages = [page_of(item, site.url) for item in items]
    for url in site.page_urls():
        assert pages.count(url) == 1, url
    for item in items:
        if item.get("markdown"):
            md = export / markdown_relpath(item["url"])
            assert md.read_text(encoding="utf-8").startswith(f'---\nurl: "{item["url"]}"')
    assert (export / markdown_relpath(site.url + "/")).is_file()
    assert sorted(p.name for p in export.iterdir()) == ["markdown", "pages.jsonl"]  # no spool left

    capsys.readouterr()
    assert main(["--redis-url", redis_url, "status", crawl_id]) == 0
    table = capsys.readouterr().out
    assert "state" in table and "finished" in table and "stats.enqueued" in table
    assert main(["--redis-url", redis_url, "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(crawl_id))
    assert row.split()[1:3] == ["finished", str(status["done"])]


@pytest.mark.slow
def test_cancel_stops_running_workers(
    redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with DemoSite(pages=300, delay=0.05) as slow:
        proc = cli("crawl", slow.url + "/", "--out", str(tmp_path / "out"), "--workers", "2",
                   "--crawl-id", crawl_id, "--quiet", redis_url=redis_url, tmp_path=tmp_path, wait=False)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the crawl never got going"
                if main(["--redis-url", redis_url, "status", crawl_id, "--json"]) == 0:
                    status = json.loads(capsys.readouterr().out)
                    if status["done"] > 0:
                        break
                capsys.readouterr()
                time.sleep(0.1)
            assert status["state"] == "running"
            assert main(["--redis-url", redis_url, "cancel", crawl_id]) == 0
            assert "cancelled" in capsys.readouterr().out
            cancelled_at = time.monotonic()
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert time.monotonic() - cancelled_at < 15
    assert proc.returncode == 1  # not finished
    assert f"crawl {crawl_id!r} is cancelled, not finished" in stderr
    assert "Traceback" not in stderr
    final = status_json(redis_url, crawl_id, capsys)
    assert final["state"] == "cancelled"
    assert final["done"] < 300
    assert final["in_flight"] == 0  # the workers released their leases
    assert final["workers"] == 0

    # Resuming a cancelled crawl is refused, with a hint.
    assert main(["--redis-url", redis_url, "crawl", "http://127.0.0.1:1/", "--crawl-id", crawl_id,
                 "--out", str(tmp_path / "again")]) == 1
    assert "was cancelled" in capsys.readouterr().err


@pytest.mark.slow
def test_worker_joins_crawl_from_its_metadata(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The crawl as another machine's `statecrawl crawl` recorded it, no worker yet.
    spider_args = {"url": site.url + "/", "include": r"/page/[1-9]\.html$", "allow_subdomains": False}

    async def create() -> None:
        client = await connect(redis_url)
        try:
            await CrawlStore(client, crawl_id).open_crawl(
                spider="site", start_url=spider_args["url"], args=spider_args)
        finally:
            await client.aclose()

    asyncio.run(create())
    out = tmp_path / "worker-out"
    proc = cli("worker", crawl_id, "--out", str(out), redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"joining crawl {crawl_id}" in proc.stderr
    feeds = list(out.glob(f"pages-{crawl_id}-*.jsonl"))
    assert len(feeds) == 1
    expected = {site.url + "/", *(f"{site.url}/page/{i}.html" for i in range(1, 10))}
    assert {item["url"] for item in read_jsonl(feeds[0])} == expected  # include= was honoured
    status = status_json(redis_url, crawl_id, capsys)
    assert status["state"] == "finished"
    assert status["done"] == len(expected)


def test_failing_workers_name_their_logs(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    proc = cli("crawl", site.url + "/", "--out", str(out), "--workers", "2", "--crawl-id", crawl_id,
               redis_url=redis_url, tmp_path=tmp_path,
               SCRAPY_SETTINGS_MODULE="no_such_settings_module")  # settings fail to load
    assert proc.returncode == 1
    for i in (1, 2):
        log = out / "logs" / f"worker-{i}.log"
        assert f"statecrawl: error: worker {i} exited with status 1; read {log}" in proc.stderr
        assert "no_such_settings_module" in log.read_text()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["crawl", "ftp://example.com/"], "invalid start URL 'ftp://example.com/'"),
        (["crawl", "not a url"], "invalid start URL"),
        (["crawl", "http://example.com/", "--include", "("], "invalid include regex '('"),
        (["crawl", "http://example.com/", "--exclude", "[a-"], "invalid exclude regex '[a-'"),
        (["crawl", "http://example.com/", "--crawl-id", "bad id!"], "invalid crawl id 'bad id!'"),
        (["status", "../etc"], "invalid crawl id"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], message: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = ["--redis-url", redis_url, *args] + (["--out", str(out)] if args[0] == "crawl" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("statecrawl: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything was started or written


def test_bad_argument_in_subprocess_has_no_traceback(redis_url: str, tmp_path: Path) -> None:
    proc = cli("crawl", "http://example.com/", "--include", "(", redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("statecrawl: error: invalid include regex")
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crawl", "http://example.com/", "--workers", "0"]) == 2
    assert "--workers: must be at least 1" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 2


@pytest.mark.parametrize("command", ["crawl", "worker", "status", "export", "cancel", "list", "purge",
                                     "redis"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "--redis-url" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["status", "nope-0"], ["status", "nope-0", "--json"], ["export", "nope-0", "--out", "X"],
             ["cancel", "nope-0"], ["worker", "nope-0"]],
)
def test_unknown_crawl_is_a_clear_error(
    args: list[str], redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    assert main(["--redis-url", redis_url, *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("statecrawl: error: no crawl 'nope-0' in Redis at redis://127.0.0.1:")
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_unreachable_redis_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert main(["--redis-url", url, "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"statecrawl: error: cannot reach Redis at {url}")
    assert "Traceback" not in err


def test_global_options_also_after_the_command(
    redis_url: str, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", crawl_id, "--redis-url", redis_url]) == 1
    assert f"no crawl {crawl_id!r}" in capsys.readouterr().err


# -- the embedded Redis commands -----------------------------------------------------------


def test_redis_status_and_stop_when_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "redis", "status"]) == 0
    out = capsys.readouterr().out
    assert "running   False" in out and f"unix://{data.resolve()}/redis.sock" in out
    assert main(["redis", "stop", "--data-dir", str(data)]) == 0
    assert "was not running" in capsys.readouterr().out
    assert not data.exists()  # neither command starts a server


# -- helpers -------------------------------------------------------------------------------


def test_default_crawl_id() -> None:
    now = datetime(2024, 1, 2, 3, 4, 5)
    assert default_crawl_id("https://Docs.Example.com:8443/a?b", now) == "docs.example.com-20240102-030405"
    assert default_crawl_id("http://[::1]:8000/", now) == "1-20240102-030405"
    long = default_crawl_id("http://" + "a" * 63 + ".com/", now)
    assert len(long) == 64 and long.endswith("-20240102-030405")


def test_spider_argv() -> None:
    argv = spider_argv("c1", {"url": "http://x/", "limit": 5, "max_depth": None, "allow_subdomains": True})
    assert argv == ["-a", "crawl_id=c1", "-a", "url=http://x/", "-a", "limit=5", "-a", "allow_subdomains=true"]


def test_render_option_reaches_the_workers() -> None:
    args = build_parser().parse_args(["crawl", "http://x/", "--render", "auto"])
    assert args.render == "auto"
    assert spider_argv("c1", {"url": "http://x/", "render": args.render})[-2:] == ["-a", "render=auto"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["crawl", "http://x/", "--render", "sometimes"])


def test_progress_line_tty_and_log() -> None:
    status = {"done": 10, "queued": 5, "in_flight": 2, "failed": 1, "workers": 2}
    tty = io.StringIO()
    progress = Progress(tty, tty=True)
    progress.update(status, now=progress.started + 1)
    progress.update({**status, "done": 20}, now=progress.started + 2)
    progress.close()
    assert tty.getvalue().count("\r\033[K") == 2 and tty.getvalue().endswith("\n")
    assert "20/27 pages, 1 failed, 10.0 pages/s, 2 workers" in tty.getvalue()

    log = io.StringIO()
    progress = Progress(log, tty=False, interval=5)
    for second in range(11):
        progress.update(status, now=progress.started + second)
    progress.close()
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 3  # at 0, 5, 10 s

    quiet = io.StringIO()
    progress = Progress(quiet, enabled=False, tty=True)
    progress.update(status)
    progress.close()
    assert quiet.getvalue() == ""


def test_list_shows_a_broken_crawl_beside_the_others(
    redis_url: str, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    import redis as redis_sync

    from tests.conftest import run_store

    good, broken = crawl_id + "-ok", crawl_id + "-broken"
    for cid in (good, broken):
        run_store(redis_url, cid, lambda store: asyncio.sleep(0))
    client = redis_sync.Redis.from_url(redis_url)
    client.set(f"sc:{{{broken}}}:items", "not a hash")  # status() gets WRONGTYPE for it
    capsys.readouterr()
    assert main(["--redis-url", redis_url, "list"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[broken] == "broken" and rows[good] in ("running", "interrupted")
    client.delete(f"sc:{{{broken}}}:items")
