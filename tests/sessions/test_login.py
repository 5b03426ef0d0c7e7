"""The crawl-wide login and pass-through sessions, with real workers.

``scrapy crawl site`` workers log in to a
:class:`~statecrawl.demo.members.MembersSite` (which counts logins) with
``-a login_url`` / ``-a login_form``: once for the crawl however many
workers start or are killed, once more when the site expires the session,
and never twice for a wrong password. Pass-through cookies and headers reach
the site and never Redis.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from statecrawl import cli
from statecrawl.demo.members import MembersSite
from tests.conftest import RedisServer, worker_env
from tests.sessions.test_sessions import (
    LOGIN_FORM,
    Proc,
    dump,
    finish,
    items_of,
    wait_until,
)

pytestmark = pytest.mark.slow


def member_args(site: MembersSite, crawl_id: str, *extra: str) -> list[str]:
    return ["-a", f"url={site.url}/members/", "-a", f"crawl_id={crawl_id}",
            "-a", f"login_url={site.url}/login", "-a", f"login_form={LOGIN_FORM}",
            "-s", "RETRY_TIMES=0", *extra]


def check_members_exported(server: RedisServer, site: MembersSite, crawl_id: str,
                           out: Path) -> None:
    """Every member page is in Redis and in `statecrawl export`, once, with its members-only code."""
    assert cli.main(["--redis-url", server.url, "export", crawl_id, "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    counts = collections.Counter(item["url"] for item in lines)
    assert {u: n for u, n in counts.items() if n != 1} == {}
    by_url = {item["url"]: item for item in lines}
    missing = [u for u in site.member_urls() if u not in by_url]
    assert not missing, f"{len(missing)} member pages missing, e.g. {missing[:5]}"
    for i, url in enumerate(site.member_urls(), 1):
        item = by_url[url]
        assert item["status"] == 200 and site.member_code(i) in item["markdown"], item


def test_one_login_for_the_crawl_through_three_kills(redis_server: RedisServer, crawl_id: str,
                                                     tmp_path: Path) -> None:
    seed = int(os.environ.get("STATECRAWL_CHAOS_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    # ~40 pages/s at most: long enough for three kills and restarts
    with MembersSite(pages=800, delay=0.05) as site:
        args = member_args(site, crawl_id, "-s", "CONCURRENT_REQUESTS=2")

        def start(name: str) -> Proc:
            return Proc("site", args, worker_env(redis_server.url, tmp_path / name),
                        tmp_path / f"{name}.log")

        survivor, victim = start("survivor"), start("victim0")
        procs = [survivor, victim]
        try:
            for kill in range(3):
                # the victim has mounted the session and is fetching members pages
                wait_until(lambda v=victim, n=kill: ("login session" in v.text()
                                                     or "logged in at" in v.text()) and (
                    client.hlen(k + "items") > 20 * (n + 1)) or v.proc.poll() is not None,
                    60, f"victim {kill} at work (seed {seed})")
                time.sleep(rng.uniform(0.1, 0.6))
                assert victim.proc.poll() is None, victim.log()
                assert client.hget(k + "meta", "state") != b"finished", "crawl too short"
                victim.kill()
                victim = start(f"victim{kill + 1}")
                procs.append(victim)
            logs = finish([survivor, victim], 120)
        finally:
            for p in procs:
                p.kill()
        assert [survivor.proc.returncode, victim.proc.returncode] == [0, 0], logs
        assert site.logins == 1, f"{site.logins} logins (seed {seed})\n{logs}"
        assert site.login_failures == 0
        assert int(client.hget(k + "login", "generation")) == 1
        # a worker that did not log in mounted the crawl's session from Redis
        mounted = [p for p in procs if "mounted the crawl's login session" in p.text()]
        assert len(mounted) >= 4, logs
        check_members_exported(redis_server, site, crawl_id, tmp_path / "export")


def test_expired_session_is_logged_in_again_once_for_the_crawl(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with MembersSite(pages=300, delay=0.03) as site:
        args = member_args(site, crawl_id, "-s", "CONCURRENT_REQUESTS=8")
        procs = [Proc("site", args, worker_env(redis_server.url, tmp_path / f"w{i}"),
                      tmp_path / f"w{i}.log") for i in range(3)]
        try:
            wait_until(lambda: client.hlen(k + "items") >= 60, 60, "60 pages are in")
            site.expire_sessions()  # every worker's next members request is redirected
            logs = finish(procs, 120)
        finally:
            for p in procs:
                p.kill()
        assert [p.proc.returncode for p in procs] == [0, 0, 0], logs
        assert site.logins == 2, f"{site.logins} logins\n{logs}"
        assert int(client.hget(k + "login", "generation")) == 2
        assert int(client.hget(k + "stats", "logins")) == 2
        assert "'statecrawl/login_expired'" in logs and "'statecrawl/login_retried'" in logs
        check_members_exported(redis_server, site, crawl_id, tmp_path / "export")


def _login_directly(site: MembersSite) -> str:
    """Log in with a plain HTTP client (the caller's own session); returns the sid."""
    data = urllib.parse.urlencode({"user": "alice", "password": "s3cret",
                                   "csrf": "c5rf-demo-token"}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{site.url}/login", data=data, timeout=10)
    except urllib.error.HTTPError as exc:  # the 302
        cookie = exc.headers["Set-Cookie"]
        return cookie.split(";")[0].split("=", 1)[1]
    raise AssertionError("no redirect after login")


def test_passthrough_cookies_and_headers_are_sent_and_never_stored(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with MembersSite(pages=40) as site:
        sid = _login_directly(site)
        token = "tok-" + "9" * 20
        args = ["-a", f"url={site.url}/members/", "-a", f"crawl_id={crawl_id}",
                "-a", f"cookies={json.dumps({'sid': sid})}",
                "-a", f"headers={json.dumps({'X-Token': token})}",
                "-s", "RETRY_TIMES=0"]
        [proc] = [Proc("site", args, worker_env(redis_server.url, tmp_path / "w"),
                       tmp_path / "w.log")]
        logs = finish([proc], 120)
        assert proc.proc.returncode == 0, logs
        assert site.logins == 1  # ours, above: the crawl itself never logged in
        member_hits = site.hits("/members/")
        assert member_hits and all(h.sid == sid and h.token == token for h in member_hits)
        items = items_of(redis_server, crawl_id)
        assert all(site.member_code(i) in items[u]["markdown"]
                   for i, u in enumerate(site.member_urls(), 1))
    client = redis_server.client()
    for key in client.keys(f"sc:{{{crawl_id}}}:*"):
        values = dump(client, key)
        assert sid.encode() not in values and token.encode() not in values, key


def test_failed_login_is_tried_once_and_the_pages_wait(redis_server: RedisServer,
                                                      crawl_id: str, tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    with MembersSite(pages=10) as site:
        args = ["-a", f"url={site.url}/members/", "-a", f"crawl_id={crawl_id}",
                "-a", f"login_url={site.url}/login",
                "-a", 'login_form={"user": "alice", "password": "wrong"}', "-s", "RETRY_TIMES=0"]
        site.login_gate.clear()  # the first login attempt is held until both workers run
        procs = [Proc("site", args, worker_env(redis_server.url, tmp_path / f"w{i}"),
                      tmp_path / f"w{i}.log") for i in range(2)]
        try:
            wait_until(lambda: site.login_posts == 1 and all(
                "joined crawl" in p.text() for p in procs), 60, "a login is under way")
            time.sleep(0.5)  # both workers are past their start (spider_opened)
        finally:
            site.login_gate.set()
        logs = finish(procs, 90)
        assert [p.proc.returncode for p in procs] == [0, 0], logs
        assert (site.logins, site.login_failures) == (0, 1), logs
        assert all("Spider closed (login_failed)" in p.text() for p in procs), logs
        assert b"login form came back" in client.hget(k + "login", "error")
        # nothing was fetched, and nothing was given up: the pages wait in the frontier
        assert not site.hits("/members/1.html") and client.hlen(k + "items") == 0
        assert client.hget(k + "meta", "state") == b"running" and client.zcard(k + "queue") > 0
        # a worker started later, with the right password, logs in and does the crawl
        fixed = Proc("site", member_args(site, crawl_id),
                     worker_env(redis_server.url, tmp_path / "fixed"), tmp_path / "fixed.log")
        logs = finish([fixed], 90)
        assert fixed.proc.returncode == 0 and (site.logins, site.login_failures) == (1, 1), logs
        items = items_of(redis_server, crawl_id)
        assert all(site.member_code(i) in items[u]["markdown"]
                   for i, u in enumerate(site.member_urls(), 1)), logs


def test_encrypted_session_is_mounted_only_with_the_key(redis_server: RedisServer, crawl_id: str,
                                                        tmp_path: Path) -> None:
    client = redis_server.client()
    k = f"sc:{{{crawl_id}}}:"
    key = Fernet.generate_key().decode()
    with MembersSite(pages=20) as site:
        args = member_args(site, crawl_id)
        first = Proc("site", args, worker_env(redis_server.url, tmp_path / "a",
                                              STATECRAWL_SECRET_KEY=key), tmp_path / "a.log")
        logs = finish([first], 90)
        assert first.proc.returncode == 0 and site.logins == 1, logs
        sid = next(h.sid for h in site.hits("/members/") if h.sid)
        stored = client.hvals(k + "jar:default")
        assert stored and all(v.startswith(b"gAAAAA") and sid.encode() not in v for v in stored)
        check_members_exported(redis_server, site, crawl_id, tmp_path / "export")
        # a worker with another key cannot open the session: it stops, it does not log in
        site.expire_sessions()
        again = Proc("site", [*args, "-a", f"url={site.url}/members/?again=1"],
                     worker_env(redis_server.url, tmp_path / "b",
                                STATECRAWL_SECRET_KEY=Fernet.generate_key().decode()),
                     tmp_path / "b.log")
        logs = finish([again], 90)
        assert "Spider closed (secret_key_error)" in again.text(), logs
        assert "encrypted with another key" in again.text() and site.logins == 1
        # and the page it could not fetch waits in the frontier for a worker with the key
        assert client.zcard(k + "queue") == 1
