"""The net guard in real crawls: Scrapy, Twisted, the statecrawl add-on and Redis, against local servers.

Each test runs one crawl in a subprocess (:mod:`tests.net._probe`: a
``CrawlerProcess`` with the add-on; or the project's ``scrapy crawl site``)
against :class:`~tests._servers.ScriptedServer` instances on 127.0.0.x and
``::1`` that record every request they get, so "refused" always means "the
server saw nothing", not just "an error was reported".
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests._servers import Reply, ScriptedServer
from tests.conftest import ROOT, RedisServer, free_port, scrapy_crawl, worker_env

from statecrawl.frontier.item_codec import load_item

ALLOW_HINT = "(STATECRAWL_NET_ALLOW to allow)"


def probe(redis_server: RedisServer, tmp_path: Path, crawl_id: str, urls: list[str],
          timeout: float = 60, env: dict[str, str] | None = None,
          **config: Any) -> tuple[dict[str, Any], str]:
    """Crawl *urls* once each; the outcome of each, the crawl's stats, and its log."""
    out = tmp_path / "probe.json"
    settings = {"REDIS_URL": redis_server.url, "STATECRAWL_CRAWL_ID": crawl_id,
                **config.pop("settings", {})}
    (tmp_path / "config.json").write_text(json.dumps(
        {"urls": urls, "out": str(out), "settings": settings, **config}))
    environ = worker_env(redis_server.url, **(env or {}))
    environ.pop("SCRAPY_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-m", "tests.net._probe", str(tmp_path / "config.json")],
                            cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stderr


def refused(outcome: dict[str, Any], message: str) -> bool:
    return outcome.get("error") == "AddressRefused" and outcome["message"] == message


def test_loopback_and_metadata_are_refused_at_once_and_not_retried(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as local, ScriptedServer({"*": [Reply()]}, host="::1") as v6:
        port = local.port
        # IP literals too go through the resolver (Twisted's HostnameEndpoint
        # asks it for every host): only it can give these refusals
        expect = {
            f"{local.url}/literal": "refused: 127.0.0.1 is loopback",
            f"https://127.0.0.1:{port}/tls": "refused: 127.0.0.1 is loopback",
            f"http://localhost:{port}/name": "refused: localhost resolves to 127.0.0.1, which is loopback",
            # the second lookup of localhost comes from Scrapy's DNS cache: checked as well
            f"http://localhost:{port}/cached": "refused: localhost resolves to 127.0.0.1, which is loopback",
            f"{v6.url}/v6": "refused: ::1 is loopback",
            "http://169.254.169.254/latest/meta-data/":
                "refused: 169.254.169.254 is the cloud metadata address (link-local)",
            "http://[::ffff:169.254.169.254]/latest/meta-data/":
                f"refused: {ipaddress.ip_address('::ffff:169.254.169.254')} is the cloud metadata "
                "address (link-local) (IPv4-mapped 169.254.169.254)",
            # other spellings of 127.0.0.1: the check is on what they resolve to
            f"http://2130706433:{port}/decimal": "refused: 2130706433 resolves to 127.0.0.1, which is loopback",
            f"http://127.1:{port}/short": "refused: 127.1 resolves to 127.0.0.1, which is loopback",
            f"http://0.0.0.0:{port}/zero": "refused: 0.0.0.0 is unspecified",
        }
        result, log = probe(redis_server, tmp_path, crawl_id, list(expect), settings={
            "STATECRAWL_NET_GUARD": True, "DOWNLOAD_TIMEOUT": 20})
    assert result["resolver"] == "GuardedResolver"
    for url, message in expect.items():
        outcome = result["outcomes"][url]
        assert refused(outcome, f"{message} {ALLOW_HINT}"), (url, outcome)
        assert outcome["retries"] == 0
        assert f"<GET {url}> {message}" in log
    assert local.requests == [] and v6.requests == []
    stats = result["stats"]
    assert stats["statecrawl/net/refused"] == len(expect) and "retry/count" not in stats
    # no connection was attempted: nothing waited for DOWNLOAD_TIMEOUT (20 s)
    assert result["seconds"] < 10


def test_redirect_from_an_allowed_host_to_a_refused_one(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as secret, ScriptedServer({"*": [Reply()]}, host="::1") as v6:
        to_secret = Reply(302, b"", {"Location": f"{secret.url}/secret"})
        to_named = Reply(302, b"", {"Location": f"http://localhost:{secret.port}/via-name"})
        with ScriptedServer({"/go": [to_secret], "/go-named": [to_named], "*": [Reply()]},
                            host="127.0.0.2") as allowed:
            urls = [f"{allowed.url}/go", f"{allowed.url}/page", f"{allowed.url}/go-named",
                    f"http://localhost:{secret.port}/named", f"{secret.url}/literal", f"{v6.url}/v6"]
            result, log = probe(redis_server, tmp_path, crawl_id, urls, settings={
                "STATECRAWL_NET_GUARD": True, "STATECRAWL_NET_ALLOW": "127.0.0.2/32, localhost, ::1"})
        outcomes = result["outcomes"]
        # the redirect target is a new connection, checked like a start URL: never reached
        assert refused(outcomes[f"{allowed.url}/go"], f"refused: 127.0.0.1 is loopback {ALLOW_HINT}")
        assert secret.hits["/secret"] == 0 and allowed.hits["/go"] == 1
        # allowed by network (an IPv4 one and an IPv6 address: IPv6 works with the guard on)
        assert outcomes[f"{allowed.url}/page"]["status"] == 200 and allowed.hits["/page"] == 1
        assert outcomes[f"{v6.url}/v6"]["status"] == 200 and v6.hits["/v6"] == 1
        # allowed by name: the name, not the address behind it
        assert outcomes[f"http://localhost:{secret.port}/named"]["status"] == 200
        assert outcomes[f"{allowed.url}/go-named"]["url"] == f"http://localhost:{secret.port}/via-name"
        assert secret.hits["/named"] == 1 and secret.hits["/via-name"] == 1
        assert refused(outcomes[f"{secret.url}/literal"], f"refused: 127.0.0.1 is loopback {ALLOW_HINT}")
        assert secret.hits["/literal"] == 0
        assert result["stats"]["statecrawl/net/refused"] == 2


def test_a_name_that_rebinds_to_a_refused_address(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    # One port on two addresses: 127.0.0.2 (allowed) answers, 127.0.0.1 records.
    with ScriptedServer({"*": [Reply()]}, host="127.0.0.2") as allowed, \
            ScriptedServer({"*": [Reply()]}, port=allowed.port) as secret:
        port = allowed.port
        urls = [f"http://rebind.test:{port}/{n}" for n in ("one", "two")] + [f"http://mixed.test:{port}/m"]
        result, _ = probe(redis_server, tmp_path, crawl_id, urls, settings={
            "STATECRAWL_NET_GUARD": True, "STATECRAWL_NET_ALLOW": ["127.0.0.2"],
            "DNSCACHE_ENABLED": False,
        }, dns={
            # first lookup: the allowed address; every later one: loopback (the rebinding)
            "rebind.test": [["127.0.0.2"], ["127.0.0.1"]],
            # an answer with an allowed and a refused address is refused whole
            "mixed.test": [["127.0.0.2", "127.0.0.1"]],
        })
    outcomes = [result["outcomes"][u] for u in urls[:2]]
    # whichever was looked up first was fetched, the other refused (a new
    # connection each: the server closes it), and 127.0.0.1 saw nothing
    assert sorted(str(o.get("status", o.get("error"))) for o in outcomes) == ["200", "AddressRefused"]
    rebound = "refused: rebind.test resolves to 127.0.0.1, which is loopback"
    assert any(refused(o, f"{rebound} {ALLOW_HINT}") for o in outcomes)
    assert refused(result["outcomes"][urls[2]],
                   f"refused: mixed.test resolves to 127.0.0.1, which is loopback {ALLOW_HINT}")
    assert secret.requests == [] and sum(allowed.hits.values()) == 1


def test_through_a_proxy_the_proxy_is_checked_not_the_target(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    # The documented limit: the proxy resolves and connects to the target.
    target = "http://169.254.169.254/latest/meta-data/"
    guard = {"STATECRAWL_NET_GUARD": True, "STATECRAWL_NET_ALLOW": "127.0.0.2"}
    with ScriptedServer({"*": [Reply()]}, host="127.0.0.2") as proxy:
        result, log = probe(redis_server, tmp_path, crawl_id, [target], settings=guard,
                            env={"http_proxy": proxy.url})
    # an allowed proxy is asked for the metadata address, and the guard cannot see it...
    assert result["outcomes"][target].get("status") == 200, result["outcomes"]
    assert [path for path, _ in proxy.requests] == [target]
    # ...but says so, in the log and in the stats
    assert "The net guard does not check the addresses reached by requests sent through a proxy" in log
    assert result["stats"]["statecrawl/net/unguarded/proxy"] == 1
    # a proxy on a refused address is refused like any host
    with ScriptedServer({"*": [Reply()]}) as local_proxy:
        result, _ = probe(redis_server, tmp_path, crawl_id + "-2", [target], settings=guard,
                          env={"http_proxy": local_proxy.url})
    assert refused(result["outcomes"][target], f"refused: 127.0.0.1 is loopback {ALLOW_HINT}, "
                                               f"for the request's proxy {local_proxy.url}")
    assert local_proxy.requests == []


def test_guard_off_changes_nothing(redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as secret:
        to_secret = Reply(302, b"", {"Location": f"{secret.url}/secret"})
        with ScriptedServer({"/go": [to_secret]}, host="127.0.0.2") as other:
            urls = [f"{secret.url}/literal", f"http://localhost:{secret.port}/name", f"{other.url}/go"]
            result, _ = probe(redis_server, tmp_path, crawl_id, urls)
    assert result["resolver"] != "GuardedResolver"
    assert [result["outcomes"][u].get("status") for u in urls] == [200, 200, 200]
    assert dict(secret.hits) == {"/literal": 1, "/name": 1, "/secret": 1}
    assert not any(k.startswith("statecrawl/net/") for k in result["stats"])


def test_guard_only_in_custom_settings_fails_closed(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    # The resolver is the process's: a spider cannot switch the guard on alone,
    # and must then not crawl unguarded.
    with ScriptedServer({"*": [Reply()]}) as local:
        result, log = probe(redis_server, tmp_path, crawl_id, [f"{local.url}/a", f"{local.url}/b"],
                            spider_settings={"STATECRAWL_NET_GUARD": True})
    assert local.requests == []
    assert "STATECRAWL_NET_GUARD is on, but the reactor's DNS resolver is" in log
    assert result["stats"]["finish_reason"] == "net_guard_unavailable"
    assert result["failed"]  # `scrapy crawl` exits with status 1: a failure is not reported as success
    # the request it found out with fails; the other goes back to the frontier, for a guarded worker
    [outcome] = result["outcomes"].values()
    assert outcome["error"] == "AddressRefused" and "not statecrawl's GuardedResolver" in outcome["message"]
    assert result["stats"]["statecrawl/released"] == 1


def test_site_spider_records_the_refusal(redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    """``scrapy crawl site -s STATECRAWL_NET_GUARD=True``: the command-line path, and the error item."""
    url = f"http://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    result = scrapy_crawl(["-a", f"url={url}", "-a", f"crawl_id={crawl_id}", "-s", "STATECRAWL_NET_GUARD=True"],
                          worker_env(redis_server.url, tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = redis_server.client().hgetall(f"sc:{{{crawl_id}}}:items")
    [item] = [load_item(v) for v in raw.values()]
    assert item["url"] == url and item["status"] is None
    assert item["error"] == {"type": "AddressRefused",
                             "message": f"refused: 127.0.0.1 is loopback {ALLOW_HINT}"}
    assert "'retry/count'" not in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("allow", ["localhost:8080", "10.0.0.1/8"])
def test_bad_allowlist_stops_scrapy_crawl(redis_server: RedisServer, tmp_path: Path, allow: str) -> None:
    result = scrapy_crawl(["-a", "url=http://example.com/", "-s", "STATECRAWL_NET_GUARD=True",
                           "-s", f"STATECRAWL_NET_ALLOW={allow}"], worker_env(redis_server.url, tmp_path),
                          timeout=60)
    assert result.returncode != 0
    assert f"ConfigError: STATECRAWL_NET_ALLOW: '{allow}'" in result.stderr
