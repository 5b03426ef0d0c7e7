"""Browser sessions: a Playwright storage state saved by one worker continues in another.

The ``/app`` page of :class:`~statecrawl.demo.members.MembersSite` keeps a
random token in localStorage (and a cookie set from JavaScript) and prints
both. A worker renders it in Chromium and exits; a second worker process of
the same crawl renders it again and must print the *same* token: its browser
context was created from the storage state the first one saved in Redis.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scrapy.settings import Settings

from statecrawl.demo.members import MembersSite
from statecrawl.frontier.item_codec import load_item
from statecrawl.render.browser import chromium_path
from tests.conftest import RedisServer, scrapy_crawl, worker_env

needs_chromium = pytest.mark.skipif(chromium_path(Settings()) is None,
                                    reason="no Chromium here (make install provides it)")

pytestmark = [pytest.mark.slow, needs_chromium]


def render(server: RedisServer, site: MembersSite, crawl_id: str, path: str, out: Path) -> str:
    result = scrapy_crawl(["-a", f"url={site.url}{path}", "-a", f"crawl_id={crawl_id}",
                           "-a", "render=browser", "-s", "RETRY_TIMES=0"],
                          worker_env(server.url, out), timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    item = load_item(server.client().hget(f"sc:{{{crawl_id}}}:items", f"{site.url}{path}"))
    assert item["renderer"] == "browser", item
    match = re.search(r"token (tok-\w+) cookie (.*)", item["markdown"])
    assert match, item["markdown"]
    return match.group(0)


def test_storage_state_continues_in_another_worker(redis_server: RedisServer, crawl_id: str,
                                                   tmp_path: Path) -> None:
    with MembersSite(pages=1) as site:
        first = render(redis_server, site, crawl_id, "/app", tmp_path / "a")
        raw = redis_server.client().get(f"sc:{{{crawl_id}}}:browser:default")
        assert raw is not None
        state = json.loads(raw)
        token = first.split()[1]
        assert any(entry["value"] == token for origin in state["origins"]
                   for entry in origin["localStorage"]), state
        second = render(redis_server, site, crawl_id, "/app?again=1", tmp_path / "b")
        assert second.split()[1] == token, (first, second)
        assert f"jsid={token}" in second
