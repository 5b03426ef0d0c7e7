"""STATECRAWL_GC_FREEZE: a worker freezes its start-up heap once it joined the crawl."""

from __future__ import annotations

import gc
from pathlib import Path

from statecrawl.demo.apps import DemoSite
from statecrawl.frontier.state import freeze_startup_heap
from tests.conftest import RedisServer, scrapy_crawl, worker_env


def test_freeze_moves_the_live_objects_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        frozen = freeze_startup_heap()  # this test process' imports at least:
        assert frozen > 1000 and gc.get_freeze_count() > 1000  # (refcounting still frees some)
    finally:
        gc.unfreeze()  # leave the test process as it was


def test_a_worker_freezes_once_joined_unless_told_not_to(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with DemoSite(pages=3) as site:
        runs = {}
        for setting in ("True", "False"):
            result = scrapy_crawl(
                ["-a", f"url={site.url}/", "-a", f"crawl_id={crawl_id}-{setting}",
                 "-s", "LOG_LEVEL=DEBUG", "-s", f"STATECRAWL_GC_FREEZE={setting}"],
                worker_env(redis_server.url, tmp_path / setting), timeout=120)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[setting] = result.stderr
    assert "start-up objects frozen out of the garbage collector's reach" in runs["True"]
    assert "frozen out of the garbage collector's reach" not in runs["False"]
    assert "Spider closed (finished)" in runs["False"]
