"""Script-built pages whose content arrives *after* the ``load`` event: the settle corpus.

:class:`SettleSite` serves, under ``/settle/``, one page per way a real app
fills itself in late. Each page's content holds a marker sentence
(:meth:`SettleSite.marker`) that exists only once its scripts are done; a
renderer that returns at ``load`` misses it. ``/settle/`` links every page
(start a crawl there); :data:`STATIC` pages have no script at all (what
settling costs on them is the benchmark's other figure).

=====================  =====================================================
page                   how its marker arrives
=====================  =====================================================
``timer-0`` ...        ``setTimeout`` of 0, 500, 1,000 and 2,000 ms
``fetch-300`` ...      ``fetch()`` of JSON from an endpoint that answers in
                       300, 800 or 1,500 ms
``chain``              fetch (300 ms), a 200 ms timer, a second fetch (300 ms)
``hydrate``            server markup (with the marker), which a module loaded
                       by dynamic ``import()`` (600 ms) empties and renders
                       again from fetched state (300 ms), as a naive
                       hydration does: read mid-way, the page is empty
``route``              a client-side route change (``pushState``) 400 ms after
                       load, then the route's data (300 ms)
``scroll``             infinite scroll: an ``IntersectionObserver`` on a
                       sentinel fetches the first screen of items (300 ms)
``shell``              server-rendered chrome (a header, navigation and a
                       footer with plenty of text) around a ``<main>`` that
                       says "Loading..." until its data arrives (500 ms)
``clock``              never settles: a clock re-arms a 100 ms timer forever;
                       its marker comes from a 300 ms timer
=====================  =====================================================
"""

from __future__ import annotations

import html
import json

from statecrawl.demo._content import HTML
from statecrawl.demo.site import DemoSite

__all__ = ["CORPUS", "STATIC", "SettleSite"]

JSON = "application/json"
#: Seconds each slow endpoint takes to answer.
_SLOW = {"/settle/api/300.json": 0.3, "/settle/api/500.json": 0.5, "/settle/api/800.json": 0.8,
         "/settle/api/1500.json": 1.5, "/settle/hydrate.js": 0.6}

_RENDER = ("function show(where, text) { const el = document.querySelector(where);"
           " el.innerHTML = '<h1>' + text.title + '</h1><p>' + text.body + '</p>'; }")
_SLOW_FETCH = "fetch('/settle/api/{ms}.json').then(r => r.json())"

#: name -> the page's script (run at the end of <body>); every page has <div id="root">.
_SCRIPTS: dict[str, str] = {
    **{f"timer-{ms}": f"setTimeout(() => show('#root', DATA), {ms});" for ms in (0, 500, 1000, 2000)},
    **{f"fetch-{ms}": _SLOW_FETCH.format(ms=ms) + ".then(() => show('#root', DATA));"
       for ms in (300, 800, 1500)},
    "chain": _SLOW_FETCH.format(ms=300)
    + ".then(() => new Promise(ok => setTimeout(ok, 200)))"
    ".then(() => " + _SLOW_FETCH.format(ms=300) + ").then(() => show('#root', DATA));",
    "route": "window.addEventListener('load', () => setTimeout(() => {"
    " history.pushState({}, '', location.pathname + '#/article');"
    " document.getElementById('root').textContent = 'Opening the article...';"
    " " + _SLOW_FETCH.format(ms=300) + ".then(() => show('#root', DATA)); }, 400));",
    "scroll": "const list = document.getElementById('root');"
    " const sentinel = document.createElement('div'); sentinel.textContent = 'Loading more';"
    " list.after(sentinel); let page = 0;"
    " new IntersectionObserver(entries => { if (!entries[0].isIntersecting || page > 0) return;"
    " page++; " + _SLOW_FETCH.format(ms=300) + ".then(() => {"
    " let items = '<p>' + DATA.body + '</p>';"
    " for (let i = 1; i < 20; i++) items += '<p>Feed item ' + i + ' of the first screen.</p>';"
    " list.innerHTML = '<h1>' + DATA.title + '</h1>' + items; }); }).observe(sentinel);",
    "shell": _SLOW_FETCH.format(ms=500) + ".then(() => show('main', DATA));",
    "clock": "const clock = document.createElement('p'); document.body.prepend(clock);"
    " (function tick() { clock.textContent = 'It is ' + new Date().toISOString();"
    " setTimeout(tick, 100); })();"
    " setTimeout(() => show('#root', DATA), 300);",
    "hydrate": "import('/settle/hydrate.js').then(m => m.hydrate(DATA));",
}
#: The corpus, in the order of the index page.
CORPUS: tuple[str, ...] = tuple(_SCRIPTS)
#: Pages without scripts, for the cost of settling.
STATIC: tuple[str, ...] = tuple(f"static-{i}" for i in range(1, 6))

_HYDRATE_JS = (
    "export function hydrate(data) { const app = document.getElementById('root');"
    " app.innerHTML = '';"  # the client renders from scratch, as a naive hydration does
    " return " + _SLOW_FETCH.format(ms=300) + ".then(() => {"
    " app.innerHTML = '<h1>' + data.title + '</h1><p>' + data.body + '</p>'"
    " + '<button>Like</button>'; }); }"
)

_CHROME_TEXT = (
    "Home News Sport Weather Business Technology Science Health Culture Travel Opinion. "
    "This site uses cookies to measure its audience and to remember your choices; "
    "you can change your mind at any time in the privacy settings linked below. "
)


def _page(name: str, marker: str) -> bytes:
    data = {"title": f"The {name} page", "body": marker}
    island = json.dumps(data).replace("</", "<\\/")
    head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(name)}</title></head><body>")
    script = f"<script>const DATA = {island}; {_RENDER} {_SCRIPTS[name]}</script>"
    if name == "hydrate":  # server-rendered: the content is in the markup already
        text = " ".join(f"Paragraph {i} of the server-rendered article." for i in range(20))
        body = (f"<div id='root' data-server-rendered='true'><h1>{data['title']}</h1>"
                f"<p>{html.escape(marker)}</p><p>{text}</p></div>"
                f"<script type='module'>const DATA = {island}; {_SCRIPTS[name]}</script>")
        return (head + body + "</body></html>").encode()
    if name == "shell":  # chrome with plenty of text around an empty main
        body = (f"<header><nav>{_CHROME_TEXT * 2}</nav></header>"
                f"<main><p class='loading' aria-busy='true'>Loading...</p></main>"
                f"<footer>{_CHROME_TEXT * 2}</footer>")
        return (head + body + script + "</body></html>").encode()
    return (head + "<div id='root'></div>" + script + "</body></html>").encode()


def _static(name: str) -> bytes:
    text = "".join(f"<p>Paragraph {i} of {name}, a page served as it is.</p>" for i in range(30))
    return (f"<!DOCTYPE html><html><head><title>{name}</title></head>"
            f"<body><h1>{name}</h1>{text}</body></html>").encode()


class SettleSite(DemoSite):
    """DemoSite plus the settle corpus under ``/settle/`` (see the module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(1, **kwargs)  # type: ignore[arg-type]
        self.slow_paths.update(_SLOW)

    @staticmethod
    def marker(name: str) -> str:
        """The sentence that is on page *name* only once its scripts are done."""
        return f"Marker sentence of the {name} page, written when its scripts were done."

    def corpus_urls(self) -> dict[str, str]:
        return {name: f"{self.url}/settle/{name}.html" for name in CORPUS}

    def static_urls(self) -> dict[str, str]:
        return {name: f"{self.url}/settle/{name}.html" for name in STATIC}

    def _resources(self, base_url: str) -> dict[str, tuple[int, str, bytes, str]]:
        res = super()._resources(base_url)
        links = "".join(f"<li><a href='/settle/{n}.html'>{n}</a></li>" for n in CORPUS + STATIC)
        res["/settle/"] = (200, HTML, f"<html><body><h1>Settle corpus</h1><ul>{links}</ul>"
                                      f"</body></html>".encode(), "")
        for name in CORPUS:
            res[f"/settle/{name}.html"] = (200, HTML, _page(name, self.marker(name)), "")
        for name in STATIC:
            res[f"/settle/{name}.html"] = (200, HTML, _static(name), "")
        for path in _SLOW:
            if path.endswith(".json"):
                res[path] = (200, JSON, b'{"ok": true}', "")
        res["/settle/hydrate.js"] = (200, "text/javascript", _HYDRATE_JS.encode(), "")
        return res
