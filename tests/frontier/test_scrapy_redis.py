"""scrapy-redis settings on statecrawl: the same Redis, and SCHEDULER_FLUSH_ON_START / _PERSIST.

The URL statecrawl derives from scrapy-redis' settings is checked against the
client scrapy-redis itself builds from them (no connection is made: clients
connect lazily); the flush and forget scripts run against the session's
redis-server.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
import redis
from scrapy.settings import Settings
from scrapy_redis.connection import get_redis_from_settings
from scrapy_redis.spiders import RedisSpider

from statecrawl.exceptions import ConfigError
from statecrawl.frontier._scrapy_redis import (
    SCRAPY_REDIS_DEFAULT_URL,
    Lifecycle,
    scrapy_redis_url,
    uses_scrapy_redis,
    warn_if_split,
)
from statecrawl.frontier.connection import crawl_epoch, redis_url_from_settings, redis_url_source
from statecrawl.frontier.store import CrawlStore, PendingRequest
from tests.conftest import run_store

_SERVER = ("host", "port", "db", "username", "password", "path")


def _target(client: redis.Redis) -> dict[str, Any]:
    kwargs = dict(client.connection_pool.connection_kwargs)
    if kwargs.get("path") is None:  # TCP: redis-py's defaults, and settings may be strings
        kwargs["port"] = int(kwargs.get("port") or 6379)
    kwargs["db"] = int(kwargs.get("db") or 0)
    return {k: kwargs.get(k) for k in _SERVER} | {
        "class": client.connection_pool.connection_class.__name__,
        "ssl_cert_reqs": kwargs.get("ssl_cert_reqs")}


@pytest.mark.filterwarnings("ignore:.*retry_on_timeout:DeprecationWarning")  # scrapy-redis' own
@pytest.mark.parametrize("settings", [
    {"REDIS_HOST": "redis.internal", "REDIS_PORT": 6380},
    {"REDIS_HOST": "redis.internal"},
    {"REDIS_PORT": "6390", "REDIS_DB": "3"},
    {"REDIS_PARAMS": {"host": "h1", "port": 7000, "password": "p@ss:w/rd", "db": 2}},
    {"REDIS_PARAMS": {"host": "h1", "username": "app", "password": "pw"}, "REDIS_HOST": "h2"},
    {"REDIS_URL": "redis://u:pw@h3:6400/5", "REDIS_HOST": "ignored", "REDIS_PORT": 1},
    {"REDIS_URL": "redis://h4:6401", "REDIS_DB": 7},
    {"REDIS_URL": "redis://h4:6401", "REDIS_PARAMS": {"password": "from-params"}},
    {"REDIS_URL": "rediss://h5:6402/0?ssl_cert_reqs=none"},
    {"REDIS_PARAMS": {"host": "h6", "ssl": True, "ssl_cert_reqs": "required"}},
    {"REDIS_PARAMS": {"unix_socket_path": "/run/redis.sock", "db": 4}},
    {"REDIS_URL": "unix:///run/redis.sock?db=2"},
    {"REDIS_HOST": "::1", "REDIS_PORT": 6379},
], ids=lambda s: ",".join(s))
def test_same_server_as_scrapy_redis(settings: dict[str, Any]) -> None:
    ours = scrapy_redis_url(Settings(settings))
    assert ours is not None
    expected = get_redis_from_settings(Settings(settings))
    assert _target(redis.Redis.from_url(ours)) == _target(expected)


def test_redis_url_alone_is_kept_as_written() -> None:
    url = "redis://:secret@example:6380/1?health_check_interval=5"
    assert scrapy_redis_url(Settings({"REDIS_URL": url})) == url


def test_no_server_settings_means_none() -> None:
    assert scrapy_redis_url(Settings({})) is None
    assert scrapy_redis_url({"REDIS_PARAMS": {"socket_timeout": 3}}) is None  # client options only
    with pytest.raises(ConfigError, match="REDIS_PARAMS"):
        scrapy_redis_url({"REDIS_PARAMS": ["host"]})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        scrapy_redis_url({"REDIS_URL": "http://nope", "REDIS_DB": 1})


def test_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://env:1/0")
    monkeypatch.delenv("STATECRAWL_REDIS_URL", raising=False)
    both = Settings({"STATECRAWL_REDIS_URL": "redis://ours/0", "REDIS_HOST": "theirs"})
    assert redis_url_from_settings(both) == "redis://ours/0"
    # scrapy-redis' settings are settings: they win over the environment
    assert redis_url_source(Settings({"REDIS_HOST": "h", "REDIS_PORT": 2})) == (
        "redis://h:2/0", "the REDIS_HOST/REDIS_PORT settings")
    assert redis_url_source(Settings({})) == ("redis://env:1/0",
                                              "the REDIS_URL environment variable")


def test_scrapy_redis_project_without_settings_uses_its_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "STATECRAWL_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    pipeline = Settings({"ITEM_PIPELINES": {"scrapy_redis.pipelines.RedisPipeline": 400}})
    assert uses_scrapy_redis(pipeline)
    assert redis_url_from_settings(pipeline) == SCRAPY_REDIS_DEFAULT_URL
    spider = RedisSpider(name="s")
    spider.fetch_data = lambda key, n: []  # set up by setup_redis() in a real crawl
    assert redis_url_from_settings(Settings({}), spider) == SCRAPY_REDIS_DEFAULT_URL
    assert redis_url_from_settings(Settings({})) is None  # a plain project: embedded Redis
    found = redis_url_source(pipeline)
    assert found is not None and "scrapy-redis' default" in found[1]


def test_persist_default_follows_the_project(caplog: pytest.LogCaptureFixture) -> None:
    spider = RedisSpider(name="s")
    spider.fetch_data = lambda key, n: []
    with caplog.at_level(logging.INFO):
        assert not Lifecycle.from_settings(Settings({}), spider, 1.0).persist
    assert "scrapy-redis' default (False)" in caplog.text
    assert Lifecycle.from_settings(Settings({"SCHEDULER_PERSIST": True}), spider, 1.0).persist
    assert Lifecycle.from_settings(Settings({}), object(), 1.0).persist  # statecrawl's own
    assert not Lifecycle.from_settings(Settings({"SCHEDULER_PERSIST": False}), None, 1.0).persist
    flush = Settings({"SCHEDULER_FLUSH_ON_START": True})
    assert Lifecycle.from_settings(flush, None, 1.0).flush_on_start
    assert not Lifecycle.from_settings(flush, None, 1.0, epoch="e").flush_on_start


def test_the_epoch_comes_from_the_setting_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`statecrawl crawl` passes it in the environment, which Scrapy does not read into
    settings: missed there, a worker that joined after Redis lost the crawl made it anew."""
    monkeypatch.delenv("STATECRAWL_CRAWL_EPOCH", raising=False)
    assert crawl_epoch(Settings({})) is None
    monkeypatch.setenv("STATECRAWL_CRAWL_EPOCH", "from-env")
    assert crawl_epoch(Settings({})) == "from-env"
    assert crawl_epoch(Settings({"STATECRAWL_CRAWL_EPOCH": "set"})) == "set"


def _req(url: str) -> PendingRequest:
    return PendingRequest(hashlib.sha1(url.encode()).digest(), True, 0, url.encode())


def test_flush_only_without_other_live_workers(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> tuple[int, int, int, int, bool, int]:
        await store.commit("w1", dedupe="set", requests=[_req("a"), _req("b")])
        await store.client.hset(store.keys.items, "a", b"{}")
        await store.heartbeat("w1", 60)
        refused = await store.flush("w2", 60)  # w1 is live
        kept = (await store.status())["queued"]
        await store.client.zadd(store.keys.workers, {"w1": 1})  # w1's heartbeat is old now
        flushed = await store.flush("w2", 60)
        left = await store.client.exists(store.keys.fifo, store.keys.fifo_list(0),
                                         store.keys.seen, store.keys.meta)
        items = await store.client.hlen(store.keys.items)
        registered = await store.client.zscore(store.keys.workers, "w2") is not None
        workers = await store.client.zcard(store.keys.workers)
        return refused, kept, flushed, left + items * 10, registered, workers

    refused, kept, flushed, left, registered, workers = run_store(redis_url, crawl_id, body)
    assert (refused, kept) == (1, 2)
    assert flushed == 0 and left == 10  # queue, dupefilter and meta gone; the item kept
    assert registered and workers == 1  # the dead worker's entry went with the rest


def test_forget_only_a_finished_crawl_by_its_last_worker(redis_url: str, crawl_id: str) -> None:
    async def body(store: CrawlStore) -> list[Any]:
        out: list[Any] = []
        await store.commit("w1", dedupe="set", requests=[_req("a")])
        out.append(await store.forget_finished("w1", 60))  # queued work: running
        _, pairs = await store.lease("w1", 5, check_finished=False)
        await store.commit("w1", dedupe="set", acks=[pairs[0][0]])
        await store.lease("w1", 5, check_finished=True)  # marks it finished
        await store.heartbeat("w2", 60)
        out.append(await store.forget_finished("w1", 60))  # w2 still live
        await store.client.zrem(store.keys.workers, "w2")
        out.append(await store.forget_finished("w1", 60))
        out.append(await store.client.exists(store.keys.seen))
        out.append((await store.status())["forgotten"])
        again = await store.commit("w1", dedupe="set", requests=[_req("a")])
        out.append(again.enqueued)  # seen no more: crawled again
        out.append((await store.status())["forgotten"])  # running again
        return out

    assert run_store(redis_url, crawl_id, body) == [
        "running", "others", "forgotten", 0, True, 1, False]


def test_warns_when_scrapy_redis_would_use_another_redis(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    pipeline = Settings({"ITEM_PIPELINES": {"scrapy_redis.pipelines.RedisPipeline": 400}})
    with caplog.at_level(logging.WARNING):
        warn_if_split(pipeline, None, "redis://env:1/0", "redis://env:1/0")  # from the env
    assert "never the environment" in caplog.text and SCRAPY_REDIS_DEFAULT_URL in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_if_split(Settings({"ITEM_PIPELINES": {"scrapy_redis.pipelines.RedisPipeline": 1},
                                "REDIS_HOST": "h"}), None, "redis://h:6379/0", "")
        warn_if_split(Settings({}), None, "redis://env:1/0", "")  # no scrapy-redis here
        warn_if_split(pipeline, None, SCRAPY_REDIS_DEFAULT_URL, "")
    assert not caplog.text
