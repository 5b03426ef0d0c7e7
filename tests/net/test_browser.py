"""The net guard in the browser: Chromium behind the guard's SOCKS5 proxy (:mod:`statecrawl.net.proxy`).

The proxy alone first (a SOCKS5 client on a socket, scripted DNS), then real
crawls (:mod:`tests.net._probe`) rendering pages in the system's Chromium
against :class:`~tests._servers.ScriptedServer` instances: the allowed site
on 127.0.0.2 (``STATECRAWL_NET_ALLOW=127.0.0.2``), the refused one on
127.0.0.1, which records every request, so "refused" means "it saw nothing".
Most crawls turn statecrawl's ResourceBlocker off (``PLAYWRIGHT_ABORT_REQUEST``
None): it already aborts requests to literal internal addresses, and these
tests show the guard holds without it.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
from scrapy.settings import Settings

from statecrawl.addon import Addon
from statecrawl.net.addresses import Allowlist
from statecrawl.net.proxy import CHROMIUM_GUARD_ARGS, GuardProxy
from tests._servers import Reply, ScriptedServer
from tests.conftest import RedisServer
from tests.net._probe import scripted_getaddrinfo
from tests.net.test_guard import ALLOW_HINT, probe, refused

BROWSER = {"STATECRAWL_RENDER": "browser", "RETRY_TIMES": 0, "STATECRAWL_RENDER_TIMEOUT": 15}
GUARD = {"STATECRAWL_NET_GUARD": True, "STATECRAWL_NET_ALLOW": "127.0.0.2", **BROWSER}
NO_BLOCKER = {"PLAYWRIGHT_ABORT_REQUEST": None}


def socks_get(proxy_port: int, host: str, port: int, path: str = "/") -> tuple[int, bytes]:
    """GET *path* from *host*:*port* through a SOCKS5 proxy: (SOCKS reply code, raw response)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        name = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
        reply = b""
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            assert chunk, "the proxy closed the connection before its reply"
            reply += chunk
        if reply[1]:
            return reply[1], b""
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        return 0, _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


# -- the proxy alone --------------------------------------------------------------------------

def test_proxy_connects_only_to_the_addresses_it_judged() -> None:
    with ScriptedServer({"*": [Reply()]}, host="127.0.0.2") as allowed, \
            ScriptedServer({"*": [Reply()]}, port=allowed.port) as secret:
        dns = scripted_getaddrinfo({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]],
                                    "mixed.test": [["127.0.0.2", "127.0.0.1"]]})
        proxy = GuardProxy(Allowlist.parse(["127.0.0.2"]), getaddrinfo=dns).start()
        try:
            port = allowed.port
            code, body = socks_get(proxy.port, "rebind.test", port, "/first")
            assert code == 0 and body.startswith(b"HTTP/1.0 200")
            # the second lookup answers loopback: refused (SOCKS 2, not allowed by ruleset)
            assert socks_get(proxy.port, "rebind.test", port, "/second") == (2, b"")
            assert socks_get(proxy.port, "mixed.test", port, "/mixed") == (2, b"")
            assert socks_get(proxy.port, "127.0.0.1", port, "/literal") == (2, b"")
            assert socks_get(proxy.port, "169.254.169.254", 80) == (2, b"")
            assert str(proxy.refusal_for("rebind.test")) == (
                f"refused: rebind.test resolves to 127.0.0.1, which is loopback {ALLOW_HINT}")
            assert str(proxy.refusal_for("169.254.169.254")).startswith(
                "refused: 169.254.169.254 is the cloud metadata address")
            assert proxy.refused == 4
            assert secret.requests == [] and dict(allowed.hits) == {"/first": 1}
        finally:
            proxy.close()


def test_relay_checks_the_upstream_proxy_not_the_target() -> None:
    with ScriptedServer({"*": [Reply()]}, host="127.0.0.2") as upstream, \
            ScriptedServer({"*": [Reply()]}) as local_upstream:
        proxy = GuardProxy(Allowlist.parse(["127.0.0.2"])).start()
        try:
            target = "http://169.254.169.254/latest/meta-data/"
            with socket.create_connection(("127.0.0.1", proxy.relay_for("127.0.0.2", upstream.port)),
                                          timeout=10) as s:
                s.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
                assert _read_all(s).startswith(b"HTTP/1.0 200")
            # an allowed proxy is asked for anything (the HTTP path's rule)...
            assert [path for path, _ in upstream.requests] == [target]
            # ...a proxy on a refused address is never connected to
            with socket.create_connection(
                    ("127.0.0.1", proxy.relay_for("127.0.0.1", local_upstream.port)), timeout=10) as s:
                s.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
                assert _read_all(s) == b""
            assert local_upstream.requests == []
            assert str(proxy.refusal_for("127.0.0.1")) == f"refused: 127.0.0.1 is loopback {ALLOW_HINT}"
            assert proxy.relay_for("127.0.0.2", upstream.port) in proxy.relay_ports()
        finally:
            proxy.close()


def test_launch_options_with_and_without_the_guard() -> None:
    off = Settings({"STATECRAWL_NET_GUARD": False})
    Addon().update_settings(off)
    options = off.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
    assert "proxy" not in options and not set(CHROMIUM_GUARD_ARGS) & set(options["args"])
    # a project's own launch options are kept, the guard's added at a priority they do not override
    on = Settings({"STATECRAWL_NET_GUARD": True, "PLAYWRIGHT_LAUNCH_OPTIONS": {
        "headless": True, "args": ["--lang=fr", "--proxy-server=direct://"]}}, priority="project")
    Addon().update_settings(on)
    options = on.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
    assert options["proxy"]["server"].startswith("socks5://127.0.0.1:")
    assert options["proxy"]["bypass"] == "<-loopback>"
    assert options["args"] == ["--lang=fr", *CHROMIUM_GUARD_ARGS]


# -- Chromium -----------------------------------------------------------------------------------

def _page(secret: int) -> bytes:
    """A page whose image, frame, script, fetch and WebSocket go to the refused server."""
    return f"""<html><head><title>page</title></head><body>
<p id="own">own script did not run</p><p id="fetch">fetch pending</p><p id="ws">ws pending</p>
<img src="http://127.0.0.1:{secret}/img.png">
<iframe src="http://127.0.0.1:{secret}/frame"></iframe>
<script src="/own.js"></script>
<script src="http://localhost:{secret}/script.js"></script>
<script>
fetch("http://127.0.0.1:{secret}/fetch", {{mode: "no-cors"}}).then(
  () => {{ document.getElementById("fetch").textContent = "fetch reached"; }},
  () => {{ document.getElementById("fetch").textContent = "fetch failed"; }});
var ws = new WebSocket("ws://127.0.0.1:{secret}/ws");
ws.onerror = () => {{ document.getElementById("ws").textContent = "ws failed"; }};
</script></body></html>""".encode()


OWN_JS = Reply(body=b'document.getElementById("own").textContent = "own script ran";',
               headers={"Content-Type": "application/javascript"})


@pytest.mark.slow
def test_subresources_to_refused_addresses_are_never_requested(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as secret:
        with ScriptedServer({"/page": [Reply(body=_page(secret.port))], "/own.js": [OWN_JS]},
                            host="127.0.0.2") as site:
            result, log = probe(redis_server, tmp_path, crawl_id, [f"{site.url}/page"], timeout=90,
                                settings={**GUARD, **NO_BLOCKER})
    outcome = result["outcomes"][f"{site.url}/page"]
    assert outcome.get("status") == 200, outcome
    # the page and its own script came through the proxy; nothing reached 127.0.0.1
    for text in ("own script ran", "fetch failed", "ws failed"):
        assert text in outcome["body"], (text, outcome["body"])
    assert secret.requests == []
    stats = result["stats"]
    assert stats["statecrawl/net/refused/browser"] >= 5, stats  # img, frame, script, fetch, ws
    assert "statecrawl/net/refused" not in stats  # the page itself was not refused
    assert not any(k.startswith("statecrawl/net/unguarded") for k in stats)
    assert f"browser connection refused: 127.0.0.1 is loopback {ALLOW_HINT}" in log
    assert (f"browser connection refused: localhost resolves to 127.0.0.1, which is loopback "
            f"{ALLOW_HINT}") in log


@pytest.mark.slow
def test_guard_off_changes_nothing_in_the_browser(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as secret:
        with ScriptedServer({"/page": [Reply(body=_page(secret.port))], "/own.js": [OWN_JS]},
                            host="127.0.0.2") as site:
            result, _ = probe(redis_server, tmp_path, crawl_id, [f"{site.url}/page"], timeout=90,
                              settings={**BROWSER, **NO_BLOCKER})
    outcome = result["outcomes"][f"{site.url}/page"]
    assert outcome.get("status") == 200 and "own script ran" in outcome["body"]
    # the same page, unguarded, reaches the other server
    assert {"/img.png", "/frame", "/script.js", "/fetch", "/ws"} <= set(secret.hits)
    assert not any(k.startswith("statecrawl/net/") for k in result["stats"])


@pytest.mark.slow
def test_a_refused_document_fails_the_page_with_the_reason(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    with ScriptedServer({"*": [Reply()]}) as secret:
        urls = [f"{secret.url}/literal", f"http://localhost:{secret.port}/name"]
        # statecrawl's ResourceBlocker on (the default): a page on a local host may load it
        result, log = probe(redis_server, tmp_path, crawl_id, urls, timeout=90,
                            settings={**GUARD, "RETRY_TIMES": 2})
    assert refused(result["outcomes"][urls[0]], f"refused: 127.0.0.1 is loopback {ALLOW_HINT}")
    assert refused(result["outcomes"][urls[1]],
                   f"refused: localhost resolves to 127.0.0.1, which is loopback {ALLOW_HINT}")
    assert all(result["outcomes"][u]["retries"] == 0 for u in urls)  # not retried
    assert secret.requests == []
    assert result["stats"]["statecrawl/net/refused"] == 2
    assert f"<GET {urls[0]}> refused: 127.0.0.1 is loopback" in log


@pytest.mark.slow
def test_navigation_redirects_to_refused_addresses(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    # One port on two addresses: 127.0.0.2 (allowed) answers, 127.0.0.1 records.
    with ScriptedServer({"*": [Reply()]}) as secret:
        away = Reply(302, b"", {"Location": f"{secret.url}/secret"})
        same_host = Reply(302, b"", {"Location": "/secret"})
        with ScriptedServer({"/away": [away], "/rebind": [same_host], "*": [Reply()]},
                            host="127.0.0.2", port=secret.port) as site:
            rebind = f"http://rebind.test:{site.port}/rebind"
            urls = [f"{site.url}/away", rebind]
            result, _ = probe(redis_server, tmp_path, crawl_id, urls, timeout=90,
                              settings={**GUARD, **NO_BLOCKER, "DNSCACHE_ENABLED": False},
                              dns={"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    outcomes = result["outcomes"]
    # to another host: Chromium follows it, the proxy refuses the new connection
    assert "ERR_SOCKS_CONNECTION_FAILED" in outcomes[urls[0]]["message"], outcomes[urls[0]]
    # to the same name, which now resolves to loopback (rebinding): refused, and said so
    assert refused(outcomes[rebind],
                   f"refused: rebind.test resolves to 127.0.0.1, which is loopback {ALLOW_HINT}")
    assert site.hits["/away"] == 1 and site.hits["/rebind"] == 1
    assert secret.requests == []
    assert result["stats"]["statecrawl/net/refused/browser"] >= 2


@pytest.mark.slow
def test_a_session_proxy_is_relayed_and_checked(
        redis_server: RedisServer, crawl_id: str, tmp_path: Path) -> None:
    target = "http://site.test/page"
    with ScriptedServer({"*": [Reply()]}, host="127.0.0.2") as upstream:
        result, log = probe(redis_server, tmp_path, crawl_id, [target], timeout=90,
                            settings={**GUARD, "STATECRAWL_PROXIES": [upstream.url]})
    # the allowed proxy gets the request (its target is the proxy's business, as over HTTP)
    assert result["outcomes"][target].get("status") == 200, result["outcomes"]
    assert target in [path for path, _ in upstream.requests]
    assert result["stats"]["statecrawl/net/unguarded/proxy"] == 1
    with ScriptedServer({"*": [Reply()]}) as local_upstream:
        result, _ = probe(redis_server, tmp_path, crawl_id + "-2", [target], timeout=90,
                          settings={**GUARD, "STATECRAWL_PROXIES": [local_upstream.url]})
    assert refused(result["outcomes"][target], f"refused: 127.0.0.1 is loopback {ALLOW_HINT}, "
                                               f"for the request's proxy {local_upstream.url}")
    assert local_upstream.requests == []
