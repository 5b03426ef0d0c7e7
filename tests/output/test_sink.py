"""STATECRAWL_SINK: items in a directory or a real S3 server (SeaweedFS), exactly once.

Real `scrapy crawl site` workers, the session's redis-server and the demo site;
no mock anywhere. Each crawl checks: every page's object once in the sink, the
same pages once in `statecrawl export`, and no item body in Redis.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statecrawl.demo.site import DemoSite
from statecrawl.exceptions import ConfigError, SerializationError
from statecrawl.frontier.item_codec import ZSTD_MAGIC, load_item, pack_item, unpack_item
from statecrawl.frontier.serialize import dumps
from statecrawl.frontier.store import CrawlStore, PendingItem, error_item
from statecrawl.output.sink import DirSink, S3Sink, object_name, parse_sink
from statecrawl.cli import main as cli_main
from tests._s3 import S3Server
from tests.cli.test_cli import cli as run_cli
from tests.conftest import RedisServer, run_store, scrapy_crawl, worker_env
from tests.frontier.test_chaos import Worker, held_by, request_urls, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        server.start()
    except RuntimeError as exc:
        if "no `weed` binary" in str(exc):
            pytest.skip(f"no S3 server binary: {exc}")
        raise  # the binary is there but does not start: a failure, not a skip
    yield server
    server.stop()


def crawl_args(url: str, crawl_id: str, *settings: str) -> list[str]:
    args = ["-a", f"url={url}/", "-a", f"crawl_id={crawl_id}", "-s", "RETRY_TIMES=0"]
    for setting in settings:
        args += ["-s", setting]
    return args


def sink_items(sink: Any, crawl_id: str) -> list[dict[str, Any]]:
    return [load_item(sink.read(name)) for name in sink.names(crawl_id)]


def check_sink_crawl(server: RedisServer, crawl_id: str, site: DemoSite, sink: Any,
                     sink_url: str, out: Path, env: dict[str, str] | None = None) -> None:
    """Every page once in the sink and in the export; Redis keeps counters, not bodies."""
    expected = site.expected_urls()
    items = sink_items(sink, crawl_id)
    counts = collections.Counter(item["url"] for item in items)
    assert {u: n for u, n in counts.items() if n != 1} == {}
    assert set(counts) == expected, (sorted(expected - set(counts))[:5], sorted(set(counts) - expected)[:5])
    for item in items:  # each object is named after its own key
        assert sink.get(crawl_id, item["url"]) is not None

    client = server.client()
    k = f"sc:{{{crawl_id}}}:"
    assert client.exists(k + "items") == 0, "item bodies in Redis"
    assert client.hget(k + "meta", "sink") == sink_url.encode()
    assert int(client.hget(k + "stats", "items")) == len(expected)
    assert client.hget(k + "meta", "state") == b"finished"

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        assert cli_main(["--redis-url", server.url, "export", crawl_id, "--out", str(out),
                         "--sink", sink_url]) == 0
        # the crawl recorded its sink: exporting from Redis instead is refused, not empty
        assert cli_main(["--redis-url", server.url, "export", crawl_id, "--out",
                         str(out / "wrong"), "--sink", "redis"]) == 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
    lines = [json.loads(x) for x in (out / "pages.jsonl").read_text().splitlines()]
    assert [x["url"] for x in lines] == sorted(expected)
    assert len(list((out / "markdown").rglob("*.md"))) == len(site.page_urls())


def test_directory_sink_every_page_once(redis_server: RedisServer, site: DemoSite,
                                        crawl_id: str, tmp_path: Path) -> None:
    root = tmp_path / "sink"
    result = scrapy_crawl(crawl_args(site.url, crawl_id, f"STATECRAWL_SINK={root}"),
                          worker_env(redis_server.url, tmp_path / "w"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(p.name for p in (root / crawl_id / "items").iterdir())
    assert all(n.endswith(".json.zst") for n in names) and len(names) == len(site.expected_urls())
    raw = (root / object_name(crawl_id, f"{site.url}/")).read_bytes()
    assert raw.startswith(ZSTD_MAGIC) and load_item(raw)["url"] == f"{site.url}/"
    check_sink_crawl(redis_server, crawl_id, site, DirSink(root), str(root), tmp_path / "export")


def test_s3_sink_every_page_once(redis_server: RedisServer, s3: S3Server, site: DemoSite,
                                 crawl_id: str, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="crawls")
    url = "s3://crawls/statecrawl/test"
    env = s3.env()
    result = scrapy_crawl(crawl_args(site.url, crawl_id, f"STATECRAWL_SINK={url}"),
                          worker_env(redis_server.url, tmp_path / "w", **env))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    listed = s3.client().list_objects_v2(Bucket="crawls", Prefix=f"statecrawl/test/{crawl_id}/")
    assert listed["KeyCount"] == len(site.expected_urls())
    assert listed["Contents"][0]["Key"].startswith(f"statecrawl/test/{crawl_id}/items/")
    check_sink_crawl(redis_server, crawl_id, site, S3Sink("crawls", "statecrawl/test", s3.client()),
                     url, tmp_path / "export", env)


def test_sigkilled_worker_every_page_once_in_the_sink(redis_server: RedisServer, s3: S3Server,
                                                      crawl_id: str, tmp_path: Path) -> None:
    """A worker killed holding pages whose items are in the sink but not yet acknowledged
    (commits 1 s apart keep that window open): those pages are fetched again by the other
    worker and written over their first objects; the export has each page once."""
    s3.client().create_bucket(Bucket="killed")
    url, env = "s3://killed", s3.env()
    sink = S3Sink("killed", "", s3.client())
    client = redis_server.client()
    with DemoSite(pages=150, delay=0.05) as site:
        args = crawl_args(site.url, crawl_id, f"STATECRAWL_SINK={url}", "CONCURRENT_REQUESTS=8")
        victim = Worker([*args, "-s", "STATECRAWL_COMMIT_INTERVAL=1.0"],
                        worker_env(redis_server.url, tmp_path / "v", **env), tmp_path / "v.log")
        other = None
        try:
            wait_until(lambda: len(held_by(client, crawl_id, victim.pid)) >= 4, 90,
                       "the victim holds leases")
            written: list[str] = []
            for _ in range(50):  # frozen, so no ack lands while we look
                victim.proc.send_signal(signal.SIGSTOP)
                time.sleep(0.2)
                urls = request_urls(client, crawl_id, held_by(client, crawl_id, victim.pid))
                written = [u for u in urls.values() if sink.get(crawl_id, u) is not None]
                if written:
                    break
                victim.proc.send_signal(signal.SIGCONT)
                time.sleep(0.3)
            assert written, "never caught an item written and not acknowledged"
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            other = Worker(args, worker_env(redis_server.url, tmp_path / "o", **env),
                           tmp_path / "o.log")
            other.proc.wait(180)
        finally:
            victim.stop()
            if other is not None:
                other.stop()
        assert other.proc.returncode == 0, other.log()
        for page in written:  # fetched twice, stored once
            assert site.hits[page[len(site.url):]] == 2, page
        check_sink_crawl(redis_server, crawl_id, site, sink, url, tmp_path / "export", env)


def test_failed_sink_writes_give_the_page_back(redis_server: RedisServer, crawl_id: str,
                                               tmp_path: Path) -> None:
    """While the sink refuses writes no page is acknowledged; once it takes them again
    every page is written once and nothing was reported done without its item."""
    root = tmp_path / "sink"
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with DemoSite(pages=60, delay=0.05) as site:
        w = Worker(crawl_args(site.url, crawl_id, f"STATECRAWL_SINK={root}",
                              "STATECRAWL_SINK_RETRIES=1", "CONCURRENT_REQUESTS=4"),
                   worker_env(redis_server.url, tmp_path / "w"), tmp_path / "w.log")
        try:
            folder = root / crawl_id / "items"
            wait_until(lambda: int(client.hget(k + "stats", "items") or 0) >= 5, 60, "items written")
            kept = folder.rename(folder.with_name("kept"))  # the items written so far
            folder.write_text("not a directory")  # every write fails: NotADirectoryError
            wait_until(lambda: int(client.hget(k + "stats", "sink_failed") or 0) >= 3, 60,
                       "writes failed")
            acked = int(client.hget(k + "stats", "acked") or 0)
            time.sleep(1.0)  # pages keep being fetched, written nowhere, given back
            assert int(client.hget(k + "stats", "acked") or 0) - acked <= 4  # those in flight
            assert int(client.hget(k + "stats", "released") or 0) >= 3
            folder.unlink()
            folder.mkdir(exist_ok=True)
            for done in kept.iterdir():  # back beside those written since
                if not (folder / done.name).exists():
                    os.replace(done, folder / done.name)
            w.proc.wait(120)
        finally:
            w.stop()
    assert w.proc.returncode == 0, w.log()
    assert "could not write the item" in w.text()
    items = sink_items(DirSink(root), crawl_id)
    counts = collections.Counter(item["url"] for item in items)
    assert set(counts) == site.expected_urls() and max(counts.values()) == 1
    assert int(client.hget(k + "stats", "items")) == len(site.expected_urls())


def test_old_json_items_and_compressed_ones_both_export(redis_server: RedisServer, crawl_id: str,
                                                        tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    old = dumps({"url": "https://a.example/old", "markdown": "# Old\n\nplain JSON"}, "item")
    new = dumps({"url": "https://a.example/new", "markdown": "# New\n\ncompressed"}, "item")
    client.hset(k + "meta", mapping={"state": "finished", "epoch": "x"})
    client.hset(k + "items", mapping={"https://a.example/old": old,
                                      "https://a.example/new": pack_item(new)})
    assert unpack_item(old) == old and unpack_item(pack_item(new)) == new
    assert cli_main(["--redis-url", redis_server.url, "export", crawl_id, "--out",
                     str(tmp_path)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "pages.jsonl").read_text().splitlines()]
    assert [(x["url"], x["markdown"]) for x in lines] == [
        ("https://a.example/new", "# New\n\ncompressed"), ("https://a.example/old", "# Old\n\nplain JSON")]
    assert unpack_item(b"[1, 2]") == b"[1, 2]"  # not a frame: JSON's decoder judges it
    with pytest.raises(SerializationError, match="not valid JSON"):
        load_item(b"garbage")
    with pytest.raises(ValueError, match="cut short"):
        unpack_item(pack_item(new * 50)[:30])


def test_items_kept_in_redis_are_compressed_and_expire_once_finished(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path) -> None:
    k = f"sc:{{{crawl_id}}}:"
    result = scrapy_crawl(crawl_args(site.url, crawl_id, "STATECRAWL_ITEMS_TTL=3600"),
                          worker_env(redis_server.url, tmp_path / "w"))
    assert result.returncode == 0, result.stderr[-3000:]
    client = redis_server.client()
    raw = client.hgetall(k + "items")
    assert {u.decode() for u in raw} == site.expected_urls()
    assert all(v.startswith(ZSTD_MAGIC) for v in raw.values())
    assert 3500 < client.ttl(k + "items") <= 3600
    assert client.hget(k + "meta", "sink") == b"redis"
    assert int(client.hget(k + "stats", "items")) == len(raw)
    # run again (a new start URL): running, the expiry is taken off
    again = scrapy_crawl(crawl_args(site.url + "/page/1", crawl_id, "STATECRAWL_ITEMS_TTL=0"),
                         worker_env(redis_server.url, tmp_path / "w2"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert client.ttl(k + "items") == -1


def test_bad_sink_settings_are_clear_errors(redis_server: RedisServer, site: DemoSite,
                                            crawl_id: str, tmp_path: Path) -> None:
    for bad, message in [("ftp://host/x", "unknown sink scheme 'ftp'"),
                         ("s3://", "expected s3://bucket/prefix"),
                         ("file://host/x", "absolute local path")]:
        with pytest.raises(ConfigError, match=message):
            parse_sink(bad)
    assert parse_sink("file:///data/x").path == Path("/data/x")
    assert parse_sink("s3://b-1/p/q/").url == "s3://b-1/p/q"
    result = scrapy_crawl(crawl_args(site.url, crawl_id, "STATECRAWL_SINK=ftp://host/x"),
                          worker_env(redis_server.url, tmp_path / "w"))
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "unknown sink scheme 'ftp'" in log and "Traceback" not in log, log[-3000:]
    assert "config_error" in log
    assert redis_server.client().hlen(f"sc:{{{crawl_id}}}:reqs") == 0  # nothing was crawled


def test_error_item_of_a_packed_item_keeps_its_identity() -> None:
    """Redis refusing an item: its stand-in is read from the compressed item, and packed."""
    body = dumps({"url": "https://a.example/x", "status": 200, "title": "X", "markdown": "m" * 999},
                 "item")
    stand_in = error_item(PendingItem("https://a.example/x", False, pack_item(body)),
                          "StoreError", "refused")
    assert stand_in.failed and stand_in.body.startswith(ZSTD_MAGIC)
    assert load_item(stand_in.body) == {"url": "https://a.example/x", "status": 200, "title": "X",
                                        "error": {"type": "StoreError", "message": "refused"}}
    in_sink = error_item(PendingItem("https://a.example/x", False, b"", in_sink=True), "E", "m")
    assert in_sink == PendingItem("https://a.example/x", True, b"", in_sink=True)


def test_statecrawl_crawl_with_a_sink_in_the_environment(
        redis_server: RedisServer, site: DemoSite, crawl_id: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`statecrawl crawl` hands STATECRAWL_SINK to its workers; its summary reads the failed
    items from the sink; `status` counts the pages; `export` finds the sink in the environment."""
    root = tmp_path / "sink"
    proc = run_cli("crawl", site.url + "/", "--out", str(tmp_path / "out"), "--workers", "2",
               "--crawl-id", crawl_id, redis_url=redis_server.url, tmp_path=tmp_path,
               STATECRAWL_SINK=str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r'\d+ pages, 3 failed \(HttpError: 2, e\.g\. "HTTP (404|500)"; '
                     r'OutOfScopeRedirect: 1', proc.stdout), proc.stdout
    assert redis_server.client().exists(f"sc:{{{crawl_id}}}:items") == 0
    names = list(DirSink(root).names(crawl_id))
    capsys.readouterr()
    assert cli_main(["--redis-url", redis_server.url, "status", crawl_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["done"] == len(names) and status["failed"] == 3
    saved = os.environ.get("STATECRAWL_SINK")
    os.environ["STATECRAWL_SINK"] = str(root)
    try:
        assert cli_main(["--redis-url", redis_server.url, "export", crawl_id, "--out",
                         str(tmp_path / "export")]) == 0
    finally:
        if saved is None:
            del os.environ["STATECRAWL_SINK"]
        else:
            os.environ["STATECRAWL_SINK"] = saved
    exported = (tmp_path / "export" / "pages.jsonl").read_text().splitlines()
    assert len(exported) == len(names)


def test_items_ttl_keeps_an_expiry_already_set(redis_server: RedisServer, crawl_id: str) -> None:
    """An API job's crawl keys carry the job's own expiry: finishing does not replace it."""
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"

    async def body(store: CrawlStore) -> list[bool]:
        await store.client.hset(k + "items", "https://a.example/", pack_item(b'{"url": "x"}'))
        done = [await store.expire_items(60)]  # running: no expiry
        await store.client.hset(k + "meta", "state", "finished")
        await store.client.expire(k + "items", 100_000)  # the job's
        done.append(await store.expire_items(60))
        await store.client.persist(k + "items")
        done.append(await store.expire_items(60))
        return done

    assert run_store(redis_server.url, crawl_id, body) == [False, False, True]
    assert 0 < client.ttl(k + "items") <= 60
