"""Small real HTTP servers on 127.0.0.1 for tests that need answers the demo site does not give.

:class:`ScriptedServer` answers each path from a script: a list of responses
used one per hit (the last one repeats), or ``HANG`` (accept, read the
request, never answer). Every request is recorded with its headers, so a test
can assert what reached the server -- and that a server standing in for a
metadata endpoint received nothing -- and the time it arrived (``times``),
for tests of what rate a site sees. :func:`links_page` makes a page that
links to n others, the start of a small site.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HANG", "Reply", "ScriptedServer", "gaps", "links_page"]

HANG = "hang"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"<html><head><title>ok</title></head><body><p>ok</p></body></html>"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html"})
    delay: float = 0.0  # seconds before answering


def links_page(n: int, prefix: str = "/p/") -> Reply:
    """A page linking to ``<prefix>0`` ... ``<prefix><n-1>``."""
    links = "".join(f'<a href="{prefix}{i}">page {i}</a> ' for i in range(n))
    return Reply(body=f"<html><head><title>home</title></head><body><p>{links}</p></body>"
                      "</html>".encode())


def gaps(times: list[float]) -> list[float]:
    """The intervals between consecutive arrival times."""
    ordered = sorted(times)
    return [b - a for a, b in zip(ordered, ordered[1:])]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        path = self.path.split("?")[0]
        arrived = time.time()
        with site.lock:
            site.times.append((arrived, path))
            site.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
            hit = site.hits[path]
            site.hits[path] += 1
        script = site.script.get(path) or site.script.get("*") or [Reply(404, b"not found")]
        reply = script[min(hit, len(script) - 1)]
        if reply == HANG:
            site.release.wait(60)
            return
        assert isinstance(reply, Reply)
        if reply.delay:
            with site.lock:
                site.active += 1
                site.max_active = max(site.max_active, site.active)
            time.sleep(reply.delay)
            with site.lock:
                site.active -= 1
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: ScriptedServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class ScriptedServer:
    """``with ScriptedServer({"/": [Reply(503), Reply()]}) as s: s.url``.

    *host* and *port* say where it listens (default: 127.0.0.1, a free port).
    """

    def __init__(self, script: dict[str, list[Reply | str]], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.hits: defaultdict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.times: list[tuple[float, str]] = []  # (time.time() it arrived, path)
        self.active = self.max_active = 0  # requests inside a Reply's delay: now, at most
        self.release = threading.Event()  # lets hanging handlers go at stop
        self.host = host
        self._server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        self._server.site = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
