"""The demo site with script-built pages and pages that misbehave in a browser.

:class:`RenderSite` is :class:`~statecrawl.demo.site.DemoSite` where every
``script_every``-th page (page 10, 20, ... by default) is *script-built*: its
HTML holds an empty ``<div id="root">`` and a script that writes the page's
text and links from a JSON island, as a client-side app does. Over HTTP such
a page has no text; in a browser it has the same content as a static page
(a marker sentence, :data:`RENDERED_MARK`, shows that it really ran).

It also serves the bad inputs a browser must survive:

* ``/bad/hang.html``: loads ``/bad/hang.js``, which the server answers only
  after :attr:`RenderSite.hang_seconds` (the ``load`` event never comes in time);
* ``/bad/dialogs.html``: ``alert()`` and ``confirm()`` before its text appears;
* ``/bad/away.html``: navigates to ``/page/1.html`` as soon as it runs;
* ``/bad/scroll.html``: appends content forever as it is scrolled;
* ``/bad/download``: ``Content-Disposition: attachment`` (a download);
* ``/bad/big.html``: about 1.3 MB of text (over a small ``DOWNLOAD_MAXSIZE``).

With ``link_bad=True`` the index page links all of them.
"""

from __future__ import annotations

import html
import json

from statecrawl.demo._content import HTML, simple_page
from statecrawl.demo.site import DemoSite

__all__ = ["BAD_PATHS", "RENDERED_MARK", "RenderSite"]

RENDERED_MARK = "This paragraph was written by JavaScript."
BAD_PATHS = ("/bad/hang.html", "/bad/dialogs.html", "/bad/away.html", "/bad/scroll.html",
             "/bad/download", "/bad/big.html")


def _app_page(i: int, pages: int) -> bytes:
    children = [c for c in (2 * i + 1, 2 * i + 2) if c <= pages]
    data = {
        "title": f"Page {i}",
        "paragraphs": [RENDERED_MARK, f"Page {i} is built in the browser from this data."],
        "links": [f"/page/{c}.html" for c in children] + ["/"],
    }
    island = json.dumps(data).replace("</", "<\\/")
    script = (
        "const d = JSON.parse(document.getElementById('data').textContent);"
        "const root = document.getElementById('root');"
        "const h = document.createElement('h1'); h.textContent = d.title; root.appendChild(h);"
        "for (const t of d.paragraphs) { const p = document.createElement('p');"
        " p.textContent = t; root.appendChild(p); }"
        "for (const href of d.links) { const a = document.createElement('a'); a.href = href;"
        " a.textContent = 'Link to ' + href; root.appendChild(a); }"
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Page {i}</title>"
        f"</head><body><noscript>You need to enable JavaScript to run this app.</noscript>"
        f"<div id='root'></div><script type='application/json' id='data'>{island}</script>"
        f"<script>{script}</script></body></html>"
    ).encode()


def _script_page(title: str, script: str, body: str = "") -> bytes:
    return (f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
            f"<body>{body}<script>{script}</script></body></html>").encode()


class RenderSite(DemoSite):
    """DemoSite with script-built pages and browser bad inputs (see the module docstring)."""

    def __init__(self, pages: int = 60, *, script_every: int = 10, hang_seconds: float = 30.0,
                 link_bad: bool = False, **kwargs: object) -> None:
        super().__init__(pages, **kwargs)  # type: ignore[arg-type]
        self.script_every = script_every
        self.link_bad = link_bad  # the index links every bad page
        self.hang_seconds = hang_seconds
        self.slow_paths["/bad/hang.js"] = hang_seconds

    def script_built_urls(self) -> list[str]:
        return [f"{self.url}/page/{i}.html" for i in self.script_built_pages()]

    def script_built_pages(self) -> list[int]:
        every = self.script_every
        return [i for i in range(1, self.pages + 1) if every and i % every == 0]

    def _resources(self, base_url: str) -> dict[str, tuple[int, str, bytes, str]]:
        res = super()._resources(base_url)
        for i in self.script_built_pages():
            res[f"/page/{i}.html"] = (200, HTML, _app_page(i, self.pages), "")
        if self.link_bad:
            status, ctype, body, location = res["/"]
            links = "".join(f'<a href="{path}">{path}</a> ' for path in BAD_PATHS)
            res["/"] = (status, ctype, body.replace(b"</body>", f"<p>{links}</p></body>".encode()),
                        location)
        text = "".join(f"<p>Paragraph {n} of a very long page.</p>" for n in range(30_000))
        res.update({
            "/bad/hang.html": (200, HTML, simple_page("Hanging", "It waits for a script.")
                               .replace(b"</body>", b"<script src='/bad/hang.js'></script></body>"),
                               ""),
            "/bad/hang.js": (200, "application/javascript", b"window.late = true;", ""),
            "/bad/dialogs.html": (200, HTML, _script_page(
                "Dialogs", "alert('hello'); confirm('sure?');"
                "document.body.insertAdjacentHTML('beforeend', '<p>After the dialogs.</p>');"), ""),
            "/bad/away.html": (200, HTML, _script_page(
                "Away", "location.href = '/page/1.html';", "<p>Leaving.</p>"), ""),
            "/bad/scroll.html": (200, HTML, _script_page(
                "Endless", "let n = 0; function more() { for (let k = 0; k < 20; k++) {"
                " const p = document.createElement('p'); p.textContent = 'Item ' + (n++);"
                " document.body.appendChild(p); } }"
                "more(); window.addEventListener('scroll', more);"), ""),
            # the content type carries one more header line: the demo server writes it as is
            "/bad/download": (200, "application/octet-stream\r\n"
                                  "Content-Disposition: attachment; filename=data.bin",
                                  b"\x00\x01binary", ""),
            "/bad/big.html": (200, HTML, f"<html><body>{text}</body></html>".encode(), ""),
        })
        return res
