"""Spider state checkpoints: ``spider.state`` in Redis, resumed after a SIGKILL.

The ``catalog`` spider walks ``/catalog?page=N`` of a
:class:`~statecrawl.demo.members.MembersSite` with its cursor in
``spider.state``; it is SIGKILLed mid-walk and restarted, and must resume
from its last checkpoint: at most one checkpoint interval of pages fetched
again, none skipped, every product stored once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from statecrawl import cli
from statecrawl.demo.members import Hit, MembersSite
from tests.conftest import RedisServer, worker_env
from tests.sessions.test_sessions import Proc, finish, wait_until

pytestmark = pytest.mark.slow

INTERVAL = 0.5


def page_of(hit: Hit) -> int:
    return int(parse_qs(urlsplit(hit.path).query)["page"][0])


def catalog_args(site: MembersSite, crawl_id: str) -> list[str]:
    return ["-a", f"url={site.url}/catalog", "-a", f"crawl_id={crawl_id}",
            "-s", f"STATECRAWL_CHECKPOINT_INTERVAL={INTERVAL}", "-s", "LOG_LEVEL=INFO"]


def test_cursor_resumes_within_one_checkpoint_interval(redis_server: RedisServer, crawl_id: str,
                                                       tmp_path: Path) -> None:
    seed = int(os.environ.get("STATECRAWL_CHAOS_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with MembersSite(pages=1, catalog_pages=200, items_per_page=5, delay=0.02) as site:
        args = catalog_args(site, crawl_id)

        def start(name: str) -> Proc:
            return Proc("catalog", args, worker_env(redis_server.url, tmp_path / name),
                        tmp_path / f"{name}.log")

        first = start("first")
        procs = [first]
        try:
            wait_until(lambda: len(site.hits("/catalog")) >= 60 or first.proc.poll() is not None,
                       60, "60 catalog pages are fetched")
            time.sleep(rng.uniform(0, 2 * INTERVAL))
            assert first.proc.poll() is None, first.log()
            first.kill()
            killed_at = time.monotonic()
            # A checkpoint the worker sent just before it died may still wait in
            # Redis' input buffer, behind nothing the test can see: let it land.
            time.sleep(0.3)
            before = site.hits("/catalog")
            last = max(page_of(h) for h in before)
            saved = json.loads(client.get(k + "spider_state"))
            restarted_at = time.monotonic()
            second = start("second")
            procs.append(second)
            logs = finish([second], 120)
        finally:
            for p in procs:
                p.kill()
        assert second.proc.returncode == 0, logs
        assert "restored from the last checkpoint" in second.text(), logs
        after = [h for h in site.hits("/catalog") if h.at >= restarted_at]
        resumed = page_of(after[0])
        # resumed exactly at the checkpoint, skipping nothing ...
        assert resumed == saved["page"] <= last + 1, (seed, resumed, saved, last)
        # ... and that checkpoint was at most one interval (plus a commit) old at the kill
        recent = {page_of(h) for h in before if h.at >= killed_at - INTERVAL - 0.3}
        again = last - resumed + 1
        print(f"seed {seed}: killed at page {last}, resumed at {resumed}: {again} pages again, "
              f"{len(recent)} fetched in the last interval")
        assert again <= len(recent) + 1, (seed, again, sorted(recent))
        # the walk completed: every product once in Redis and in the export
        assert json.loads(client.get(k + "spider_state")) == {"page": 201, "done": True}
        stored = {key.decode() for key in client.hkeys(k + "items")}
        assert stored == set(site.catalog_item_urls())
        out = tmp_path / "export"
        assert cli.main(["--redis-url", redis_server.url, "export", crawl_id, "--out", str(out)]) == 0
        exported = collections.Counter(json.loads(line)["url"]
                                       for line in (out / "pages.jsonl").read_text().splitlines())
        assert set(exported) == set(site.catalog_item_urls()) and set(exported.values()) == {1}
        # pages fetched twice are the ones after the checkpoint, and only those
        fetched = collections.Counter(page_of(h) for h in site.hits("/catalog"))
        assert {p for p, n in fetched.items() if n > 1} <= set(range(resumed, last + 1))


SPIDER = '''
import os
from scrapy import Spider

class Stateful(Spider):
    name = "stateful"
    crawl_id = os.environ["CRAWL_ID"]
    custom_settings = {"ADDONS": {"statecrawl.Addon": 0}, "STATECRAWL_OUTPUT_DIR": "",
                       "STATECRAWL_CHECKPOINT_INTERVAL": 0.2}

    async def start(self):
        self.logger.info("state at start: %r", dict(self.state))
        self.state["runs"] = self.state.get("runs", 0) + 1
        if os.environ.get("BAD"):
            self.state["bad"] = object()
        return
        yield
'''


def test_state_is_loaded_at_start_saved_at_close_and_json_only(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    spider = tmp_path / "stateful.py"
    spider.write_text(SPIDER)

    def run(**extra: str) -> str:
        env = worker_env(redis_server.url, None, CRAWL_ID=crawl_id, **extra)
        env.pop("SCRAPY_SETTINGS_MODULE", None)
        result = subprocess.run([sys.executable, "-m", "scrapy", "runspider", str(spider)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    run()
    assert "state at start: {'runs': 1}" in run()  # the second run starts from the first's
    key = f"sc:{{{crawl_id}}}:spider_state"
    assert json.loads(redis_server.client().get(key)) == {"runs": 2}
    log = run(BAD="1")
    assert "spider.state cannot be checkpointed" in log and "statecrawl/checkpoint_unserializable" in log
    assert json.loads(redis_server.client().get(key)) == {"runs": 2}  # the last good one stays
