"""Issue 10 for the CLI: no silent failure, no hang.

Real components only: the session's private redis-server (``redis_url``, never
the machine's Redis on 6379), real ``statecrawl`` and ``scrapy crawl``
subprocesses, :class:`DemoSite` on 127.0.0.1, and, for the embedded-Redis
tests, the ``redis-server`` the CLI starts itself under ``tmp_path``. Every
wait is bounded; every worker a test may leave behind (on today's code) is
found by its crawl id and killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from statecrawl.cli import main
from statecrawl.demo.site import DemoSite
from statecrawl.frontier import embedded
from statecrawl.frontier.connection import connect
from statecrawl.frontier.store import CrawlStore
from statecrawl.spiders.site import SiteSpider
from tests.cli.test_cli import cli, page_of, read_jsonl, status_json
from tests.conftest import ROOT, free_port

# -- helpers -------------------------------------------------------------------------------


def crawl_processes(crawl_id: str) -> list[int]:
    """Pids of live ``scrapy crawl`` processes of *crawl_id* (a /proc scan; zombies have no cmdline)."""
    needle = f"crawl_id={crawl_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in argv and b"scrapy" in argv:
            pids.append(int(entry.name))
    return pids


def kill_crawl_processes(crawl_id: str) -> None:
    """Last resort: workers orphaned by a CLI that died (today's SIGHUP handling)."""
    for pid in crawl_processes(crawl_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def record_crawl(
    redis_url: str, crawl_id: str, *, args: dict[str, Any], spider: str = "site",
    limit: int | None = None,
) -> None:
    """The crawl's metadata as its first worker writes it (store.open_crawl), with no worker left."""
    async def create() -> None:
        client = await connect(redis_url)
        try:
            await CrawlStore(client, crawl_id).open_crawl(
                spider=spider, start_url=args.get("url"), limit=limit, args=args)
        finally:
            await client.aclose()

    asyncio.run(create())


def key(crawl_id: str, name: str) -> str:
    return f"sc:{{{crawl_id}}}:{name}"


def done(client: redis.Redis, crawl_id: str) -> int:
    return int(client.hlen(key(crawl_id, "items")))


def embedded_env() -> dict[str, str]:
    """An environment with no Redis URL at all, so the CLI uses its embedded Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "STATECRAWL_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


# -- --version ------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"statecrawl {importlib.metadata.version('statecrawl')}\n"


# -- SIGHUP: the terminal goes away -----------------------------------------------------------

# Run the CLI as the leader of a new session whose controlling terminal is the
# pty: opening the slave by name (no O_NOCTTY) makes it so, then exec.
_ON_TTY = ("import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR)); "
           "os.execv(sys.executable, [sys.executable, '-m', 'statecrawl.cli', *sys.argv[2:]])")


@pytest.mark.slow
def test_terminal_hangup_stops_crawl_and_its_workers(
    redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Closing the terminal (SIGHUP, then EIO on every write) is a clean stop: exit 129,
    the workers stopped, their leases given back."""
    master, slave = os.openpty()
    # Slow pages (here and below) keep the crawl running while the test acts on it.
    with DemoSite(pages=300, delay=0.5) as slow:
        cmd = [sys.executable, "-c", _ON_TTY, os.ttyname(slave), "--redis-url", redis_url,
               "crawl", slow.url + "/", "--out", str(tmp_path / "out"), "--workers", "2",
               "--crawl-id", crawl_id]  # no --quiet: the progress line keeps writing to the tty
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "STATECRAWL_"))}
        env["PYTHONPATH"] = str(ROOT)
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True)
        os.close(slave)
        shown = bytearray()
        try:
            deadline = time.monotonic() + 60
            workers: list[int] = []
            while True:
                while select.select([master], [], [], 0)[0]:  # keep the pty from filling up
                    with contextlib.suppress(OSError):
                        shown += os.read(master, 65536)
                assert proc.poll() is None, shown.decode(errors="replace")
                assert time.monotonic() < deadline, "the crawl never got going"
                capsys.readouterr()
                if main(["--redis-url", redis_url, "status", crawl_id, "--json"]) == 0:
                    if json.loads(capsys.readouterr().out)["done"] > 0:
                        workers = crawl_processes(crawl_id)
                        break
                time.sleep(0.1)
            assert len(workers) == 2, workers
            os.close(master)  # the terminal goes away
            master = -1
            code = proc.wait(timeout=60)
        finally:
            if master >= 0:
                os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            leftover = crawl_processes(crawl_id)
            kill_crawl_processes(crawl_id)
    assert b"crawl id: " + crawl_id.encode() in shown
    assert code == 128 + signal.SIGHUP
    assert leftover == []  # every worker stopped before the CLI exited
    final = status_json(redis_url, crawl_id, capsys)
    assert final["in_flight"] == 0  # the workers gave their leases back
    assert final["workers"] == 0
    assert final["state"] == "interrupted"
    assert 0 < final["done"] < 300


@pytest.mark.slow
def test_hangup_of_worker_command_stops_its_worker(
    redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with DemoSite(pages=300, delay=0.3) as slow:
        record_crawl(redis_url, crawl_id, args={"url": slow.url + "/", "allow_subdomains": False})
        proc = cli("worker", crawl_id, "--out", str(tmp_path / "out"), redis_url=redis_url,
                   tmp_path=tmp_path, wait=False)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the worker never got going"
                capsys.readouterr()
                assert main(["--redis-url", redis_url, "status", crawl_id, "--json"]) == 0
                if json.loads(capsys.readouterr().out)["done"] > 0:
                    break
                time.sleep(0.1)
            assert len(crawl_processes(crawl_id)) == 1
            proc.send_signal(signal.SIGHUP)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            leftover = crawl_processes(crawl_id)
            kill_crawl_processes(crawl_id)
    assert proc.returncode == 128 + signal.SIGHUP, stderr[-3000:]
    assert f"interrupted: the worker stopped; rejoin with: statecrawl worker {crawl_id}" in stderr
    assert leftover == []
    final = status_json(redis_url, crawl_id, capsys)
    assert final["in_flight"] == 0 and final["workers"] == 0
    assert final["state"] == "interrupted"


# -- the embedded Redis is supervised ---------------------------------------------------------


def start_embedded_crawl(site: DemoSite, data: Path, out: Path, crawl_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "statecrawl.cli", "--data-dir", str(data), "crawl", site.url + "/",
         "--out", str(out), "--workers", "2", "--crawl-id", crawl_id, "--quiet"],
        cwd=out.parent, env=embedded_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def embedded_client(data: Path, proc: subprocess.Popen[str]) -> Iterator[redis.Redis]:
    """A client of the embedded Redis the CLI started (this test starts none)."""
    wait_until(lambda: proc.poll() is not None or embedded.embedded_status(data)["running"], 60,
               "the embedded Redis")
    assert proc.poll() is None, proc.communicate()
    client = redis.Redis(unix_socket_path=embedded.embedded_status(data)["socket"], socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.slow
def test_embedded_redis_killed_mid_crawl_is_restarted(
    tmp_path: Path, crawl_id: str, no_redis_url: None, capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    with DemoSite(pages=200, delay=0.4) as slow:
        proc = start_embedded_crawl(slow, data, tmp_path / "out", crawl_id)
        try:
            with embedded_client(data, proc) as client:
                wait_until(lambda: proc.poll() is not None or done(client, crawl_id) >= 15, 90,
                           "15 pages")
                assert proc.poll() is None, proc.communicate()
                assert client.hget(key(crawl_id, "meta"), "state") == b"running"
                before = done(client, crawl_id)
            old_pid = embedded.embedded_status(data)["pid"]
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)  # the OOM killer, say
            stdout, stderr = proc.communicate(timeout=180)
            new_pid = embedded.embedded_status(data)["pid"]
            assert proc.returncode == 0, stdout + stderr
            assert new_pid is not None and new_pid != old_pid
            notes = [line for line in stderr.splitlines() if "embedded Redis died" in line]
            assert len(notes) == 1, stderr
            assert notes[0].startswith("statecrawl: the embedded Redis died")
            assert notes[0].endswith(f"restarted it from its append-only file (AOF), pid {new_pid}")
            assert f"crawl {crawl_id} finished: " in stdout

            export = tmp_path / "export"
            assert main(["--data-dir", str(data), "export", crawl_id, "--out", str(export)]) == 0
            items = read_jsonl(export / "pages.jsonl")
            assert len(items) > before  # the crawl went on after the restart
            pages = [page_of(item, slow.url) for item in items]
            for url in slow.page_urls():
                assert pages.count(url) == 1, url
            assert status_json_embedded(data, crawl_id, capsys)["state"] == "finished"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            kill_crawl_processes(crawl_id)
            embedded.stop_embedded_redis(data)


def status_json_embedded(data: Path, crawl_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--data-dir", str(data), "status", crawl_id, "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


@pytest.mark.slow
def test_embedded_redis_that_cannot_restart_stops_the_crawl(
    tmp_path: Path, crawl_id: str, no_redis_url: None,
) -> None:
    data = tmp_path / "data"
    with DemoSite(pages=300, delay=0.4) as slow:
        proc = start_embedded_crawl(slow, data, tmp_path / "out", crawl_id)
        try:
            with embedded_client(data, proc) as client:
                wait_until(lambda: proc.poll() is not None or done(client, crawl_id) >= 10, 90,
                           "10 pages")
                assert proc.poll() is None, proc.communicate()
            # The restart will find a broken AOF manifest (read only at start-up).
            manifest = data / "redis" / "appendonlydir" / "appendonly.aof.manifest"
            manifest.write_text("not a manifest\n")
            pid = embedded.embedded_status(data)["pid"]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            stdout, stderr = proc.communicate(timeout=120)
            leftover = crawl_processes(crawl_id)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            kill_crawl_processes(crawl_id)
            embedded.stop_embedded_redis(data)
    assert proc.returncode == 1, stdout + stderr
    assert time.monotonic() - killed_at < 60  # workers that cannot stop are killed, not waited for
    assert "died and could not be restarted; stopping the workers" in stderr
    resume = f"statecrawl crawl {slow.url}/ --crawl-id {crawl_id} --data-dir {data}"
    assert f"interrupted: workers stopped; resume with: {resume}" in stderr
    assert "statecrawl: error: the embedded Redis (data dir" in stderr
    assert "Invalid AOF manifest file format" in stderr  # why, from the server's log
    assert "Traceback" not in stderr
    assert leftover == []


# -- status and list -----------------------------------------------------------------------


def test_status_and_list_show_interrupted_crawls_and_dead_letters(
    redis_url: str, crawl_id: str, capsys: pytest.CaptureFixture[str],
) -> None:
    record_crawl(redis_url, crawl_id, args={"url": "http://127.0.0.1:1/"})  # running, no worker
    client = redis.Redis.from_url(redis_url)
    try:
        letters = [
            {"kind": "request", "ref": "000000000007", "error": "unreadable request: bad JSON",
             "at": 1.5, "worker": "w1", "data": "{\"url\": "},
            {"kind": "item", "ref": "http://127.0.0.1:1/a", "error": "not a JSON object",
             "at": 2.5, "worker": "w2", "data": "[1]"},
        ]
        client.rpush(key(crawl_id, "dead"), *(json.dumps(letter) for letter in letters))
        client.rpush(key(crawl_id, "dead"), b"\xff not json")  # the newest, unreadable itself
        client.hset(key(crawl_id, "stats"), mapping={"quarantined": 2, "quarantined_request": 1,
                                                     "quarantined_item": 1})

        status = status_json(redis_url, crawl_id, capsys)
        assert status["state"] == "interrupted"
        assert status["quarantined"] == 2 and status["stats"]["quarantined"] == 2
        dead = status["dead_letters"]  # newest first
        assert [d.get("ref") for d in dead] == [None, "http://127.0.0.1:1/a", "000000000007"]
        assert dead[0]["error"].startswith("unreadable dead letter")
        assert dead[2] == letters[0]

        assert main(["--redis-url", redis_url, "status", crawl_id]) == 0
        table = capsys.readouterr().out.splitlines()
        assert "state              interrupted" in table
        assert "quarantined        2" in table
        assert "dead_letter        item http://127.0.0.1:1/a: not a JSON object" in table
        assert "dead_letter        request 000000000007: unreadable request: bad JSON" in table

        assert main(["--redis-url", redis_url, "list"]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(crawl_id))
        assert row.split()[1] == "interrupted"

        # A live worker (a heartbeat in the last seconds) makes it "running" again.
        now_s, now_us = client.time()
        client.zadd(key(crawl_id, "workers"), {"w3": now_s * 1000 + now_us // 1000})
        assert status_json(redis_url, crawl_id, capsys)["state"] == "running"
    finally:
        client.close()


# -- values read from Redis never become options ----------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("spider", "spider: invalid spider name '--pidfile="),
        ("arg_name", "args: invalid argument name '--set' (expected an identifier)"),
        ("url", "args.url: invalid start URL 'file:///etc/passwd'"),
        ("newline", "args.include: 'a\\nb' contains a NUL or a line break"),
        ("list", "args.exclude: expected a string, number or boolean, not list"),
    ],
)
def test_worker_refuses_crafted_metadata(
    case: str, message: str, redis_url: str, crawl_id: str, tmp_path: Path,
) -> None:
    target = tmp_path / "pwned.pid"
    spider = f"--pidfile={target}" if case == "spider" else "site"
    args: dict[str, Any] = {"url": "http://127.0.0.1:1/", "allow_subdomains": False}
    if case == "arg_name":
        args["--set"] = "FEED_URI=file:///tmp/x"
    elif case == "url":
        args["url"] = "file:///etc/passwd"
    elif case == "newline":
        args["include"] = "a\nb"
    elif case == "list":
        args["exclude"] = ["a"]
    client = redis.Redis.from_url(redis_url)
    try:
        client.sadd("sc:crawls", crawl_id)
        client.hset(key(crawl_id, "meta"), mapping={
            "state": "running", "spider": spider, "start_url": "http://127.0.0.1:1/",
            "args": json.dumps(args)})
    finally:
        client.close()
    out = tmp_path / "out"
    try:
        proc = cli("worker", crawl_id, "--out", str(out), redis_url=redis_url, tmp_path=tmp_path,
                   timeout=60)
    finally:
        kill_crawl_processes(crawl_id)
    assert not target.exists()  # (today: Scrapy writes its --pidfile there)
    assert not out.exists()
    assert "joining crawl" not in proc.stderr  # nothing was started
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"statecrawl: error: crawl {crawl_id!r}: refusing to start a worker from its metadata in "
        "Redis (")
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# -- resuming with other options -------------------------------------------------------------


def test_resume_with_other_options_is_refused(
    redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:1/"
    first = SiteSpider(url=url, crawl_id=crawl_id, max_depth="3", include="/docs/").crawl_args
    record_crawl(redis_url, crawl_id, args=first)
    out = tmp_path / "out"
    code = main(["--redis-url", redis_url, "crawl", url, "--crawl-id", crawl_id, "--out", str(out),
                 "--max-depth", "2", "--allow-subdomains", "--limit", "9", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"statecrawl: error: crawl {crawl_id!r} was started with other options")
    assert '--allow-subdomains: recorded false, given true' in err
    assert '--include: recorded "/docs/", given none' in err
    assert "--max-depth: recorded 3, given 2" in err
    assert "limit" not in err  # a new limit alone would be recorded, not refused
    assert err.count("\n") == 1
    assert not out.exists()  # no worker was started, nothing written
    client = redis.Redis.from_url(redis_url)
    try:
        meta = client.hgetall(key(crawl_id, "meta"))
    finally:
        client.close()
    assert json.loads(meta[b"args"]) == first and b"limit" not in meta


@pytest.mark.slow
def test_resume_with_new_limit_records_it(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    url = site.url + "/"
    first = SiteSpider(url=url, crawl_id=crawl_id, limit="3").crawl_args
    record_crawl(redis_url, crawl_id, args=first, limit=3)
    proc = cli("crawl", url, "--crawl-id", crawl_id, "--limit", "6", "--out", str(tmp_path / "out"),
               "--quiet", redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "limit changed from 3 to 6" in proc.stdout.splitlines()
    client = redis.Redis.from_url(redis_url)
    try:
        meta = client.hgetall(key(crawl_id, "meta"))
    finally:
        client.close()
    assert meta[b"limit"] == b"6"
    assert json.loads(meta[b"args"]) == {**first, "limit": 6}  # what `statecrawl worker` joins with
    assert 3 < status_json(redis_url, crawl_id, capsys)["done"] <= 6


# -- a failure is never reported as success -----------------------------------------------------


@pytest.mark.slow
def test_crawl_whose_only_page_fails_exits_1(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path,
) -> None:
    proc = cli("crawl", site.url + "/missing.html", "--max-depth", "0", "--crawl-id", crawl_id,
               "--out", str(tmp_path / "out"), "--quiet", redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f'crawl {crawl_id} finished: 1 page, 1 failed (HttpError: 1, e.g. "HTTP 404") in ' in proc.stdout
    assert f"statecrawl: error: no page of crawl {crawl_id!r} succeeded: all 1 failed" in proc.stderr


# These two need the scheduler to keep a failing start URL's retries (not
# drop them as duplicates): without that the crawl ends with no item at all.
# The error types are Scrapy's: 2.19 wraps Twisted's errors in its own.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "error_types"),
    [("refused", "DownloadConnectionRefusedError|ConnectionRefusedError"),
     ("unresolvable", "CannotResolveHostError|DNSLookupError")],
)
def test_unreachable_start_url_exits_1_naming_the_error(
    where: str, error_types: str, redis_url: str, crawl_id: str, tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/" if where == "refused" else "http://nonexistent.invalid/"
    proc = cli("crawl", url, "--crawl-id", crawl_id, "--out", str(tmp_path / "out"), "--quiet",
               redis_url=redis_url, tmp_path=tmp_path, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf'crawl {crawl_id} finished: 1 page, 1 failed \(({error_types}): 1, e\.g\. "[^"]+"\)',
                     proc.stdout), proc.stdout
    assert f"statecrawl: error: no page of crawl {crawl_id!r} succeeded: all 1 failed" in proc.stderr


@pytest.mark.slow
def test_quarantined_entries_fail_the_crawl(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:  # as a worker records an entry it could not read (statecrawl.frontier.deadletter)
        client.hset(key(crawl_id, "stats"), mapping={"quarantined": 1, "quarantined_request": 1})
        client.rpush(key(crawl_id, "dead"), json.dumps({
            "kind": "request", "ref": "000000000003", "error": "bad JSON", "at": 1.0,
            "worker": "w1", "data": "{"}))
    finally:
        client.close()
    proc = cli("crawl", site.url + "/", "--include", r"/page/[1-3]\.html$", "--crawl-id", crawl_id,
               "--out", str(tmp_path / "out"), "--quiet", redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"crawl {crawl_id} finished: 4 pages, 0 failed in " in proc.stdout
    assert (f"statecrawl: error: 1 stored entries of crawl {crawl_id!r} could not be read and were "
            f"quarantined; 'statecrawl status {crawl_id}' shows them") in proc.stderr


# -- export skips what it cannot read -------------------------------------------------------------


@pytest.mark.slow
def test_export_skips_unreadable_items(
    site: DemoSite, redis_url: str, crawl_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    proc = cli("crawl", site.url + "/", "--include", r"/page/[1-3]\.html$", "--crawl-id", crawl_id,
               "--out", str(tmp_path / "out"), "--quiet", redis_url=redis_url, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    good = sorted([site.url + "/", *(f"{site.url}/page/{i}.html" for i in (1, 2, 3))])
    client = redis.Redis.from_url(redis_url)
    try:
        assert sorted(k.decode() for k in client.hkeys(key(crawl_id, "items"))) == good
        client.hset(key(crawl_id, "items"), mapping={
            site.url + "/cut-short.html": b'{"url": "' + site.url.encode() + b'/cut-short.html", "mark',
            site.url + "/a-list.html": b"[1, 2]",
        })
    finally:
        client.close()
    export = tmp_path / "export"
    capsys.readouterr()
    assert main(["--redis-url", redis_url, "export", crawl_id, "--out", str(export)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"exported 4 pages (0 failed) to {export / 'pages.jsonl'}")
    assert captured.err.startswith(f"statecrawl: error: skipped 2 unreadable items of crawl {crawl_id!r} (")
    assert f"'{site.url}/cut-short.html': SerializationError: " in captured.err
    assert f"'{site.url}/a-list.html': ValueError: not a JSON object but list" in captured.err
    assert captured.err.count("\n") == 1
    assert [item["url"] for item in read_jsonl(export / "pages.jsonl")] == good
    assert len(list((export / "markdown").rglob("*.md"))) == 4


# -- authentication -------------------------------------------------------------------------------


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test only, with --requirepass, on a free port."""
    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is not installed"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--requirepass", "hunter2-sesame", "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: proc.poll() is not None or _answers(port), 10, "redis-server")
        assert proc.poll() is None
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.AuthenticationError:
        return True
    except redis.ConnectionError:
        return False
    finally:
        client.close()
    return True


@pytest.mark.parametrize("userinfo", [":wrong-secret-41@", ""], ids=["wrong", "none"])
def test_status_with_bad_redis_password_says_authentication_failed(
    password_redis: int, userinfo: str, capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://{userinfo}127.0.0.1:{password_redis}/0"
    assert main(["--redis-url", url, "status", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("statecrawl: error: authentication failed at Redis")
    assert "Check the password in REDIS_URL" in err
    assert "Is it running" not in err
    assert "wrong-secret-41" not in err and "hunter2-sesame" not in err
