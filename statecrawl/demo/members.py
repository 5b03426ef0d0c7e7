"""A login-gated demo site that counts logins, for session tests and benchmarks.

Why: "exactly one login per crawl" can only be shown against a site that
counts them, and proxy affinity only against one that sees which proxy a
request came through. :class:`MembersSite` is served from a thread like
:class:`~statecrawl.demo.site.DemoSite`; its responses depend on cookies and
so are built per request. Layout (N = ``pages``, P = ``catalog_pages``)::

    /robots.txt            200  allows everything
    /                      200  public: links to /members/, /pool/, /catalog?page=1
    /login                 GET: 200 the login form (user, password, a hidden csrf field)
                           POST: right fields -> 302 /members/ + Set-Cookie sid=...;
                                 wrong -> 200 the form again, with an error (a test
                                 can hold the answer: :attr:`MembersSite.login_gate`)
    /members/              members only: links to /members/1.html .. N
    /members/{i}.html      members only: "Member page i", a code only members see
                           (:meth:`MembersSite.member_code`), links to i+1, i+2
    /pool/ , /pool/{i}.html  public, i in 1..N: a visitor cookie is set on the first
                           visit; with ``block_after`` = K a visitor's requests after
                           its K-th get 403 (a site blocking a busy session)
    /catalog?page={n}      n in 1..P: ``items_per_page`` products and a "next" link;
                           any other n is a 404
    /app                   a page whose script keeps a token in localStorage and a
                           cookie set from JavaScript, and prints both (browser tests)

"Members only" means: without a valid ``sid`` cookie the answer is a 302 to
``/login?next=<path>``. :meth:`MembersSite.expire_sessions` invalidates every
session, as a site does when sessions time out.

Proxies: :meth:`MembersSite.add_proxy` opens another port that serves the
same site to clients using it as an HTTP proxy (absolute request URIs), and
every request is logged with the proxy it came through (:attr:`MembersSite.log`).
"""

from __future__ import annotations

import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

__all__ = ["Hit", "MembersSite"]

_HTML = "text/html; charset=utf-8"
_CSRF = "c5rf-demo-token"


@dataclass(frozen=True)
class Hit:
    """One request the site answered."""

    at: float  # time.monotonic()
    method: str
    path: str  # path and query
    status: int
    proxy: int | None  # the proxy port it came through, None if direct
    sid: str | None  # the session cookie sent, if any
    visitor: str | None  # the visitor cookie sent (or set by this response)
    agent: str
    token: str | None  # the X-Token request header, if sent (pass-through tests)


def _page(title: str, body: str) -> bytes:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>").encode()


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        site = self.server.site
        target = self.path
        if target.startswith(("http://", "https://")):  # through us as a proxy
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        cookies = _cookies(self.headers.get("Cookie", ""))
        if site.delay:
            time.sleep(site.delay)
        status, headers, payload, visitor = site._respond(method, target, cookies, body)
        site._record(Hit(time.monotonic(), method, target, status, self.server.proxy_port,
                         cookies.get("sid"), visitor, self.headers.get("User-Agent", ""),
                         self.headers.get("X-Token")))
        head = [f"HTTP/1.1 {status} {self.responses[status][0]}", "Server: statecrawl-members",
                f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers)]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, site: MembersSite, proxy: bool) -> None:
        self.site = site
        super().__init__((site.host, 0), _Handler)
        self.proxy_port: int | None = self.server_address[1] if proxy else None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up are normal under load."""


class MembersSite:
    """The members site in a background thread; use as a context manager (module docstring)."""

    def __init__(self, pages: int = 300, *, catalog_pages: int = 0, items_per_page: int = 10,
                 block_after: int = 0, delay: float = 0.0, host: str = "127.0.0.1",
                 user: str = "alice", password: str = "s3cret") -> None:
        self.pages, self.catalog_pages, self.items_per_page = pages, catalog_pages, items_per_page
        self.block_after, self.delay, self.host = block_after, delay, host
        self.user, self.password = user, password
        self.logins = 0  # successful logins
        self.login_failures = 0
        self.login_posts = 0  # login forms received (counted on arrival)
        #: Cleared: a submitted login form waits for it to be set again, so a test
        #: can hold a login in progress (the site answers once it is set).
        self.login_gate = threading.Event()
        self.login_gate.set()
        self.log: list[Hit] = []
        self._sessions: set[str] = set()
        self._visitors: dict[str, int] = {}  # visitor -> requests made
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # -- serving ---------------------------------------------------------------

    def _serve(self, proxy: bool) -> _Server:
        server = _Server(self, proxy)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True, name=f"members-{server.server_address[1]}")
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)
        return server

    def start(self) -> MembersSite:
        if not self._servers:
            self._serve(proxy=False)
        return self

    def add_proxy(self) -> str:
        """Open a proxy port serving this site; returns its ``http://host:port`` URL."""
        server = self._serve(proxy=True)
        return f"http://{self.host}:{server.server_address[1]}"

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers.clear()

    def __enter__(self) -> MembersSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._servers[0].server_address[1]}"

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.log.append(hit)

    def hits(self, prefix: str = "") -> list[Hit]:
        with self._lock:
            return [h for h in self.log if h.path.startswith(prefix)]

    # -- the content contract ------------------------------------------------------

    @staticmethod
    def member_code(i: int) -> str:
        """The code only a logged-in member sees on /members/{i}.html."""
        return "code-" + hashlib.sha1(f"member {i}".encode()).hexdigest()[:12]

    def member_urls(self) -> list[str]:
        return [f"{self.url}/members/{i}.html" for i in range(1, self.pages + 1)]

    def pool_urls(self) -> list[str]:
        return [f"{self.url}/pool/{i}.html" for i in range(1, self.pages + 1)]

    def catalog_item_urls(self) -> list[str]:
        return [f"{self.url}/catalog/item/{n}" for n in
                range(1, self.catalog_pages * self.items_per_page + 1)]

    def expire_sessions(self) -> None:
        """Every logged-in session is now unknown: members pages redirect to the login."""
        with self._lock:
            self._sessions.clear()

    # -- responses -----------------------------------------------------------------------

    def _respond(self, method: str, target: str, cookies: dict[str, str], body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        parts = urlsplit(target)
        path = parts.path
        headers = [("Content-Type", _HTML)]
        if path == "/robots.txt":
            return 200, [("Content-Type", "text/plain")], b"User-agent: *\nAllow: /\n", None
        if path == "/login":
            return self._login(method, body, headers)
        if path.startswith("/members/"):
            with self._lock:
                member = cookies.get("sid") in self._sessions
            if not member:
                return 302, [*headers, ("Location", "/login?next=" + quote(path))], b"", None
            return self._member(path, headers)
        if path.startswith("/pool/"):
            return self._pool(path, cookies, headers)
        if path == "/catalog":
            return self._catalog(parse_qs(parts.query), headers)
        if path == "/app":
            return 200, headers, _APP, None
        if path == "/":
            return 200, headers, _page("Members demo", (
                "<a href='/members/'>Members</a> <a href='/pool/'>Pool</a> "
                "<a href='/catalog?page=1'>Catalog</a>")), None
        return 404, headers, _page("Not found", "<p>No such page.</p>"), None

    def _form(self, error: str = "") -> bytes:
        return _page("Log in", (
            (f"<p class='error'>{html.escape(error)}</p>" if error else "")
            + "<form method='post' action='/login'>"
            f"<input type='hidden' name='csrf' value='{_CSRF}'>"
            "<input name='user'><input type='password' name='password'>"
            "<button type='submit'>Log in</button></form>"))

    def _login(self, method: str, body: bytes, headers: list[tuple[str, str]]
               ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        if method != "POST":
            return 200, headers, self._form(), None
        with self._lock:
            self.login_posts += 1
        self.login_gate.wait(60)
        form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
        if (form.get("user"), form.get("password"), form.get("csrf")) != (
                self.user, self.password, _CSRF):
            with self._lock:
                self.login_failures += 1
            return 200, headers, self._form("Wrong user name or password."), None
        sid = secrets.token_hex(16)
        with self._lock:
            self._sessions.add(sid)
            self.logins += 1
        return 302, [*headers, ("Location", "/members/"),
                     ("Set-Cookie", f"sid={sid}; Path=/; HttpOnly")], b"", None

    def _member(self, path: str, headers: list[tuple[str, str]]
                ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        if path == "/members/":
            links = "".join(f"<li><a href='/members/{i}.html'>Member page {i}</a></li>"
                            for i in range(1, self.pages + 1))
            return 200, headers, _page("Members", f"<ul>{links}</ul>"), None
        name = path.removeprefix("/members/").removesuffix(".html")
        if not name.isdigit() or not 1 <= int(name) <= self.pages:
            return 404, headers, _page("Not found", "<p>No such member page.</p>"), None
        i = int(name)
        links = "".join(f"<a href='/members/{j}.html'>Next {j}</a> "
                        for j in (i + 1, i + 2) if j <= self.pages)
        return 200, headers, _page(f"Member page {i}", (
            f"<p>Welcome back. Your code is {self.member_code(i)}.</p><p>{links}</p>")), None

    def _pool(self, path: str, cookies: dict[str, str], headers: list[tuple[str, str]]
              ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        visitor = cookies.get("visitor")
        with self._lock:
            if visitor is None or visitor not in self._visitors:
                visitor = f"v{len(self._visitors) + 1}"
                self._visitors[visitor] = 0
                headers = [*headers, ("Set-Cookie", f"visitor={visitor}; Path=/")]
            self._visitors[visitor] += 1
            count = self._visitors[visitor]
        if self.block_after and count > self.block_after:
            return 403, headers, _page("Blocked", "<p>Too many requests.</p>"), visitor
        if path == "/pool/":
            links = "".join(f"<a href='/pool/{i}.html'>Pool page {i}</a> "
                            for i in range(1, self.pages + 1))
            return 200, headers, _page("Pool", f"<p>{links}</p>"), visitor
        name = path.removeprefix("/pool/").removesuffix(".html")
        if not name.isdigit() or not 1 <= int(name) <= self.pages:
            return 404, headers, _page("Not found", "<p>No such pool page.</p>"), visitor
        return 200, headers, _page(f"Pool page {name}", f"<p>Seen by {visitor}.</p>"), visitor

    def _catalog(self, query: dict[str, list[str]], headers: list[tuple[str, str]]
                 ) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        page = query.get("page", [""])[0]
        if not page.isdigit() or not 1 <= int(page) <= self.catalog_pages:
            return 404, headers, _page("Not found", "<p>No such catalog page.</p>"), None
        n = int(page)
        first = (n - 1) * self.items_per_page + 1
        items = "".join(
            f"<li class='product'><a href='/catalog/item/{k}'>Product {k}</a></li>"
            for k in range(first, first + self.items_per_page))
        nxt = (f"<a rel='next' href='/catalog?page={n + 1}'>Next</a>"
               if n < self.catalog_pages else "")
        return 200, headers, _page(f"Catalog page {n}", f"<ul>{items}</ul>{nxt}"), None


_APP = _page("App", (
    "<p id='out'>not run</p><script>"
    "let t = localStorage.getItem('token');"
    "if (!t) { t = 'tok-' + Math.random().toString(36).slice(2); localStorage.setItem('token', t); }"
    "if (!document.cookie.includes('jsid=')) { document.cookie = 'jsid=' + t + '; path=/'; }"
    "document.getElementById('out').textContent = 'token ' + t + ' cookie ' + document.cookie;"
    "</script>"))
