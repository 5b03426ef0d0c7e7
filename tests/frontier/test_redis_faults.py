"""Redis errors are classified, stops are bounded, and a lost crawl is never a finished one.

Real ``scrapy crawl`` workers against private redis-servers started per test
(some with settings the session's server must not have: no persistence, a
1 MB bulk limit, a password).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.item_codec import load_item
from tests._servers import Reply, ScriptedServer
from tests.conftest import RedisServer, free_port, scrapy_crawl, worker_env
from tests.frontier.test_chaos import Worker, check_every_page_once, held_by, wait_until

pytestmark = pytest.mark.slow


def private_redis(tmp_path: Path, *options: str, port: int = 0) -> subprocess.Popen[bytes]:
    """A redis-server with *options* on *port* (default: a free one; kept as ``.port``)."""
    port = port or free_port()
    (tmp_path / "redis").mkdir(exist_ok=True)
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", str(tmp_path / "redis"), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.port = port  # type: ignore[attr-defined]
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.AuthenticationError:
            break  # up, and wants a password
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return proc


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def volatile_redis(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, str, redis.Redis]:
    """A redis-server that keeps nothing on disk: a restart empties it. (proc, port, url, client)"""
    proc = private_redis(tmp_path, *NO_PERSISTENCE)
    port = proc.port  # type: ignore[attr-defined]
    return proc, port, f"redis://127.0.0.1:{port}/0", redis.Redis(port=port)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def args_for(url: str, crawl_id: str, *settings: str) -> list[str]:
    args = ["-a", f"url={url}", "-a", f"crawl_id={crawl_id}"]
    for setting in settings:
        args += ["-s", setting]
    return args


def test_item_over_redis_bulk_limit_becomes_an_error_item(crawl_id: str, tmp_path: Path) -> None:
    proc = private_redis(tmp_path, "--proto-max-bulk-len", "1mb", "--save", "")
    url = f"redis://127.0.0.1:{proc.port}/0"  # type: ignore[attr-defined]
    big = b"<html><head><title>Big</title></head><body>" + b"<p>lorem ipsum dolor</p>" * 90_000
    home = b'<html><body><p>home</p><a href="/big">big</a> <a href="/small">small</a></body></html>'
    try:
        with ScriptedServer({"/": [Reply(200, home)], "/big": [Reply(200, big)],
                             "/small": [Reply()]}) as site:
            result = scrapy_crawl(args_for(site.url + "/", crawl_id), worker_env(url, tmp_path),
                                  timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        client = redis.Redis(port=proc.port)  # type: ignore[attr-defined]
        items = {k.decode(): load_item(v) for k, v in client.hgetall(f"sc:{{{crawl_id}}}:items").items()}
        error = items[site.url + "/big"]["error"]
        assert error["type"] == "ItemTooLarge" and "proto-max-bulk-len" in error["message"]
        assert items[site.url + "/big"]["title"] == "Big" and "markdown" not in items[site.url + "/big"]
        assert items[site.url + "/small"]["error"] is None and items[site.url + "/"]["error"] is None
        stats = client.hgetall(f"sc:{{{crawl_id}}}:stats")
        assert int(stats[b"items_too_large"]) == 1
        assert client.sismember(f"sc:{{{crawl_id}}}:failed", site.url + "/big")
    finally:
        stop(proc)


def test_wrong_type_key_stops_the_worker_with_an_error(redis_server: RedisServer, crawl_id: str,
                                                       tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=300, delay=0.02) as site:
        worker = Worker(args_for(site.url + "/", crawl_id), worker_env(redis_server.url, tmp_path),
                        tmp_path / "w.log")
        try:
            wait_until(lambda: client.hlen(k + "items") >= 5, 60, "the crawl runs")
            with client.pipeline() as pipe:  # someone else's key where the items belong
                pipe.delete(k + "items")
                pipe.set(k + "items", "not a hash")
                pipe.execute()
            assert worker.proc.wait(60) == 1, worker.log()
        finally:
            worker.stop()
    log = worker.text()
    assert "WRONGTYPE" in log and "Spider closed (redis_error)" in log, log[-3000:]
    assert "Redis refuses even a small item" in log
    assert log.count("Traceback") == 0, log[-3000:]


def test_a_worker_told_the_epoch_does_not_make_a_lost_crawl_again(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    """`statecrawl crawl` gives its workers the crawl's epoch in the environment; one that
    starts after Redis lost the crawl must stop, not create it anew (it did, once in CI)."""
    client = redis_server.client()
    with DemoSite(pages=5) as site:
        result = scrapy_crawl(args_for(site.url + "/", crawl_id),
                              worker_env(redis_server.url, tmp_path, STATECRAWL_CRAWL_EPOCH="gone"),
                              timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "is gone from Redis" in result.stderr and "Spider closed (state_lost)" in result.stderr
    assert client.exists(f"sc:{{{crawl_id}}}:meta") == 0
    assert not [key for key in client.scan_iter(f"sc:{{{crawl_id}}}:*")]
    assert site.hits.get("/", 0) == 0


def test_redis_restarted_empty_is_state_lost_not_finished(crawl_id: str, tmp_path: Path) -> None:
    proc, port, url, client = volatile_redis(tmp_path)
    k = f"sc:{{{crawl_id}}}:"
    try:
        with DemoSite(pages=400, delay=0.02) as site:
            workers = [Worker(args_for(site.url + "/", crawl_id), worker_env(url, tmp_path / str(i)),
                              tmp_path / f"w{i}.log") for i in range(2)]
            try:
                wait_until(lambda: client.hlen(k + "items") >= 20 and client.zcard(k + "workers") == 2,
                           60, "both workers crawl")
                stop(proc)
                proc = private_redis(tmp_path, *NO_PERSISTENCE, port=port)
                codes = [w.proc.wait(60) for w in workers]
            finally:
                for w in workers:
                    w.stop()
        logs = "\n".join(w.log() for w in workers)
        assert codes == [1, 1], logs
        for w in workers:
            assert "is gone from Redis" in w.text() and "Spider closed (state_lost)" in w.text(), logs
        # nothing pretends the crawl finished: no meta was made again, no frontier
        assert client.hget(k + "meta", "state") is None
        assert not client.sismember("sc:crawls", crawl_id)
        assert client.exists(k + "queue", k + "reqs", k + "items") == 0
    finally:
        client.close()
        stop(proc)


def test_sigterm_while_redis_is_down_is_bounded(crawl_id: str, tmp_path: Path) -> None:
    """STATECRAWL_STOP_TIMEOUT bounds a stop; what was not committed is fetched again later."""
    server = RedisServer(free_port(), tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    client = server.client()
    k = f"sc:{{{crawl_id}}}:"
    try:
        with DemoSite(pages=200, delay=0.05) as site:
            args = args_for(site.url + "/", crawl_id, "STATECRAWL_STOP_TIMEOUT=3", "RETRY_TIMES=0")
            worker = Worker(args, worker_env(server.url, tmp_path / "a"), tmp_path / "a.log")
            try:
                wait_until(lambda: client.hlen(k + "items") >= 10, 60, "the crawl runs")
                server.stop("kill")
                time.sleep(0.3)  # its next commits fail
                worker.proc.send_signal(signal.SIGTERM)
                sent = time.monotonic()
                code = worker.proc.wait(60)
                took = time.monotonic() - sent
            finally:
                worker.stop()
            assert code == 0, worker.log()
            assert took < 20, f"the stop took {took:.1f}s"
            assert "STATECRAWL_STOP_TIMEOUT (3s) ran out" in worker.text(), worker.log()
            server.start()  # the AOF brings the crawl back, with the dead worker's leases
            again = scrapy_crawl(args_for(site.url + "/", crawl_id, "STATECRAWL_WORKER_TIMEOUT=1"),
                                 worker_env(server.url, tmp_path / "b"), timeout=180)
            assert again.returncode == 0, again.stderr[-3000:]
            check_every_page_once(server, crawl_id, site, tmp_path / "export")
    finally:
        client.close()
        server.stop()


def test_sighup_stops_a_worker_like_sigterm(redis_server: RedisServer, crawl_id: str,
                                           tmp_path: Path) -> None:
    client = redis_server.client()
    with DemoSite(pages=120, delay=0.3) as site:
        worker = Worker(args_for(site.url + "/", crawl_id, "CONCURRENT_REQUESTS=8"),
                        worker_env(redis_server.url, tmp_path), tmp_path / "w.log")
        try:
            wait_until(lambda: len(held_by(client, crawl_id, worker.pid)) >= 4, 30, "it holds leases")
            worker.proc.send_signal(signal.SIGHUP)
            assert worker.proc.wait(30) == 0, worker.log()
        finally:
            worker.stop()
    assert "Spider closed (shutdown)" in worker.text(), worker.log()
    assert held_by(client, crawl_id, worker.pid) == []


def test_wrong_password_is_one_error_line(crawl_id: str, tmp_path: Path) -> None:
    proc = private_redis(tmp_path, "--requirepass", "right-pw", "--save", "")
    try:
        url = f"redis://:wrong-pw@127.0.0.1:{proc.port}/0"  # type: ignore[attr-defined]
        result = scrapy_crawl(args_for("http://127.0.0.1:9/", crawl_id), worker_env(url, tmp_path),
                              timeout=60)
    finally:
        stop(proc)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "authentication failed" in errors[0].lower() and "wrong-pw" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "Spider closed (redis_unavailable)" in result.stderr


def test_cli_reports_a_crawl_redis_lost_as_a_failure(crawl_id: str, tmp_path: Path) -> None:
    proc, port, url, client = volatile_redis(tmp_path)
    try:
        with DemoSite(pages=400, delay=0.02) as site:
            cmd = [sys.executable, "-m", "statecrawl.cli", "--redis-url", url, "crawl",
                   site.url + "/", "--crawl-id", crawl_id, "--workers", "2", "--quiet",
                   "--out", str(tmp_path / "out")]
            cli = subprocess.Popen(cmd, cwd=tmp_path, env=worker_env(url), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                wait_until(lambda: client.hlen(f"sc:{{{crawl_id}}}:items") >= 20, 60, "it runs")
                stop(proc)
                proc = private_redis(tmp_path, *NO_PERSISTENCE, port=port)
                out, err = cli.communicate(timeout=90)
            finally:
                if cli.poll() is None:
                    cli.kill()
                    cli.communicate()
        assert cli.returncode == 1, out + err
        assert f"crawl {crawl_id} lost:" in out, out
        assert f"Redis lost crawl {crawl_id!r} while it ran" in err, err
        # not made again by a worker (one starting late did, before it read its epoch)
        assert client.exists(f"sc:{{{crawl_id}}}:meta") == 0, client.hgetall(f"sc:{{{crawl_id}}}:meta")
    finally:
        client.close()
        stop(proc)
