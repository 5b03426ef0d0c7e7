"""Does an HTML page build its content with JavaScript? (the ``auto`` render mode's test)

A page fetched over HTTP is *script-built* when what a reader would see is
missing from the HTML and scripts are there to make it. Three signs, each
cheap to read from one lxml tree:

* little visible text (``<body>`` text outside ``script``/``style``/
  ``noscript``/``template``), against the scripts the page ships;
* an *empty app root*: the mount point of a client-side framework
  (``#root``, ``#app``, ``#__next``, ``[data-reactroot]``, ``[ng-app]`` ...)
  with no element and no text inside;
* a ``<noscript>`` that asks for JavaScript;
* *content still to come*, which outweighs any amount of text around it (a
  shell: header, navigation and footer served, the content fetched later):
  a ``<main>`` (or ``role="main"``) with almost no text, an element marked
  ``aria-busy="true"``, or a placeholder text such as "Loading...".

Otherwise a page with plenty of text is not script-built, whatever its
scripts: a server-rendered page that hydrates later has its content in the
HTML already. The thresholds are conservative on purpose: a false "script-built"
costs one browser render; a false "static" loses a page's content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from statecrawl.content.extract import parse_html

__all__ = ["Verdict", "looks_script_built"]

#: Visible characters at or above which a page is static, whatever else it has.
ENOUGH_TEXT = 500
#: Visible characters below which a page with any script is script-built.
ALMOST_EMPTY = 80

_APP_ROOT_IDS = ("root", "app", "__next", "__nuxt", "___gatsby", "svelte", "main-app")
_APP_ROOT = etree.XPath(  # one pass, in C: framework mount points by id or attribute
    "//*[" + " or ".join(f"@id='{i}'" for i in _APP_ROOT_IDS)
    + " or @data-reactroot or @ng-app or @ng-version or @data-server-rendered or @data-v-app]")
_VISIBLE_TEXT = etree.XPath(  # text nodes, selected in C: a 10 MB page stays cheap
    ".//text()[not(ancestor::script or ancestor::style or ancestor::noscript"
    " or ancestor::template or ancestor::head)]")
_MAIN = etree.XPath("//main | //*[@role='main']")
_BUSY = etree.XPath("//body//*[@aria-busy='true']")
_SHORT_TEXT = etree.XPath(  # short visible text nodes: where a placeholder would be
    "//body//text()[string-length(normalize-space(.)) > 0 and string-length(.) < 60"
    " and not(ancestor::script or ancestor::style or ancestor::noscript or ancestor::template)]")
_PLACEHOLDER = re.compile(r"^\W*(loading|please wait|one moment)\b\W*$", re.I)
_NEEDS_JS = re.compile(r"\b(enable|requires?|needs?|turn on|activate)\b.{0,40}\bjavascript\b"
                       r"|\bjavascript\b.{0,40}\b(enabled?|required|disabled|off)\b", re.I | re.S)


@dataclass(frozen=True, slots=True)
class Verdict:
    script_built: bool
    reason: str
    text_chars: int
    script_chars: int


def _visible_text_chars(body: etree._Element, limit: int) -> int:
    """Characters of visible text under *body* (whitespace runs aside), up to about *limit*."""
    total = 0
    for text in _VISIBLE_TEXT(body):
        total += len(text.strip())
        if total > limit:
            break
    return total


def _empty_app_root(root: etree._Element) -> str | None:
    for element in _APP_ROOT(root):
        if len(element) == 0 and not (element.text or "").strip():
            return f"empty app root <{element.tag} id={element.get('id')!r}>"
    return None


def _content_to_come(root: etree._Element) -> str | None:
    """Why the page's content looks still to come (a shell waiting for data), or None."""
    for main in _MAIN(root):
        if _visible_text_chars(main, ALMOST_EMPTY) < ALMOST_EMPTY and main.find(".//img") is None:
            return f"<{main.tag}> with almost no text"
    if _BUSY(root):
        return "an element is aria-busy"
    for text in _SHORT_TEXT(root):
        if _PLACEHOLDER.match(text.strip()):
            return f"placeholder text {text.strip()!r}"
    return None


def looks_script_built(html: str) -> Verdict:
    """The ``auto`` mode's verdict on an HTML page fetched over HTTP. Never raises."""
    try:
        root = parse_html(html)
    except Exception:  # noqa: BLE001 - a verdict must not stop a crawl
        root = None
    if root is None:
        return Verdict(False, "not parseable as HTML", 0, 0)
    scripts = list(root.iter("script"))
    script_chars = sum(len(s.text or "") + (2000 if s.get("src") else 0) for s in scripts)
    body = root.find("body")
    text_chars = _visible_text_chars(body if body is not None else root, ENOUGH_TEXT)
    if scripts:
        waiting = _content_to_come(root)
        if waiting is not None:
            return Verdict(True, waiting, text_chars, script_chars)
    if text_chars >= ENOUGH_TEXT:
        return Verdict(False, f"{text_chars}+ characters of visible text", text_chars, script_chars)
    if not scripts:
        return Verdict(False, "no scripts", text_chars, script_chars)
    app_root = _empty_app_root(root)
    if app_root is not None:
        return Verdict(True, app_root, text_chars, script_chars)
    for noscript in root.iter("noscript"):
        if _NEEDS_JS.search(noscript.text_content() or ""):
            return Verdict(True, "<noscript> asks for JavaScript", text_chars, script_chars)
    if text_chars < ALMOST_EMPTY:
        return Verdict(True, f"{text_chars} characters of text and {len(scripts)} scripts",
                       text_chars, script_chars)
    if script_chars > 20 * text_chars:
        return Verdict(True, f"{script_chars} characters of script for {text_chars} of text",
                       text_chars, script_chars)
    return Verdict(False, f"{text_chars} characters of text", text_chars, script_chars)
