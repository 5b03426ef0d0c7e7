"""Read facts out of an HTML page: a parse that never fails, and page metadata.

Crawled pages are whatever a server sent: truncated downloads, broken
nesting, binary bodies served as ``text/html``, XML declarations inside a
``str``. Everything here therefore returns a value on any input and never
raises; a page that cannot be understood yields ``None`` fields, not a crash
in the middle of a crawl.

:func:`parse_html` is the single place where statecrawl turns a page into an
lxml tree, so :mod:`statecrawl.content.markdown` (and the later main-content
extractor) parse pages the same way.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypedDict
from urllib.parse import urljoin

from lxml import etree
from lxml import html as lxml_html

__all__ = ["PageMetadata", "normalize_space", "page_metadata", "parse_html"]

logger = logging.getLogger(__name__)

#: C0 controls other than tab and newlines, and DEL: never text, and libxml2
#: turns NUL into U+FFFD instead of dropping it. Deleted from the UTF-8 bytes,
#: where they can only be themselves (``bytes.translate`` is ~30x a regex).
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


class PageMetadata(TypedDict):
    """What :func:`page_metadata` returns; a plain ``dict`` at run time."""

    title: str | None
    description: str | None
    language: str | None
    canonical: str | None  # absolute
    open_graph: dict[str, str]  # og:title -> "title", og:image -> "image", ...
    twitter: dict[str, str]  # twitter:card -> "card", ...
    published: str | None  # as the page writes it (ISO 8601 mostly)
    author: str | None


_EMPTY: PageMetadata = {
    "title": None, "description": None, "language": None, "canonical": None,
    "open_graph": {}, "twitter": {}, "published": None, "author": None,
}
#: Where pages put their publication time and author, in order of trust.
_PUBLISHED_KEYS = ("property:article:published_time", "name:article:published_time",
                   "itemprop:datepublished", "name:date", "name:pubdate", "name:publishdate",
                   "name:dc.date", "name:dcterms.created", "property:og:published_time")
_AUTHOR_KEYS = ("name:author", "property:article:author", "name:article:author",
                "itemprop:author", "name:dc.creator", "name:twitter:creator")
_LD_JSON = etree.XPath("//script[@type='application/ld+json']")
_CANONICAL = etree.XPath("//link[@href and contains(concat(' ', normalize-space("
                         "translate(@rel, 'CANONICAL', 'canonical')), ' '), ' canonical ')]/@href")
_BASE_HREF = etree.XPath("(//base[@href])[1]/@href")


def normalize_space(text: str | None) -> str | None:
    """Collapse every run of whitespace (``&nbsp;`` included) to one space.

    Returns ``None`` for ``None`` and for text that is only whitespace, so
    callers can chain fallbacks with ``or``.
    """
    if not text:
        return None
    return " ".join(text.split()) or None


def _new_parser() -> lxml_html.HTMLParser:
    """A fresh parser per call: lxml parser objects must not be shared across threads."""
    return lxml_html.HTMLParser(
        encoding="utf-8",
        remove_comments=True,
        remove_pis=True,
        no_network=True,
        huge_tree=True,  # deep or very large pages must not be cut off by libxml2's limits
    )


def parse_html(html: str) -> lxml_html.HtmlElement | None:
    """Parse a page into its ``<html>`` element, or ``None`` if there is nothing to parse.

    The text is handed to lxml as UTF-8 bytes with the encoding fixed:
    lxml refuses a ``str`` carrying an ``<?xml encoding=...?>`` declaration,
    and a ``<meta charset>`` in the page must not re-decode text that Scrapy
    has already decoded.
    """
    if not html or html.isspace():
        return None
    data = html.encode("utf-8", "replace").translate(None, _CONTROL_BYTES)
    try:
        root = lxml_html.document_fromstring(data, parser=_new_parser())
    except (etree.ParserError, etree.LxmlError, ValueError) as exc:
        logger.debug("HTML could not be parsed: %r", exc)
        return None
    # document_fromstring returns the <html> element; guard against odd roots anyway.
    if not isinstance(root, lxml_html.HtmlElement):
        return None
    return root


def _first_text(root: lxml_html.HtmlElement, xpath: str) -> str | None:
    """The whitespace-normalised text of the first element of ``xpath`` that has any."""
    for element in root.xpath(xpath):
        text = normalize_space(element.text_content())
        if text:
            return text
    return None


def _meta_contents(root: lxml_html.HtmlElement) -> dict[str, str]:
    """Map ``name``/``property``/``http-equiv`` (lower-cased) to the first non-empty ``content``.

    One pass over the ``<meta>`` elements, case-insensitive on the key
    because pages write ``Description`` and ``OG:Title`` as often as not.
    Keys are prefixed by the attribute they came from (``name:``,
    ``property:``, ``http-equiv:``) so the three namespaces cannot clash.
    """
    found: dict[str, str] = {}
    for meta in root.iter("meta"):
        content = normalize_space(meta.get("content"))
        if content is None:
            continue
        for attribute in ("name", "property", "http-equiv", "itemprop"):
            key = (meta.get(attribute) or "").strip().lower()
            if key:
                found.setdefault(f"{attribute}:{key}", content)
    return found


def _og(meta: dict[str, str], field: str) -> str | None:
    """An Open Graph value; many sites wrongly put ``og:*`` in ``name``, so accept both."""
    return meta.get(f"property:og:{field}") or meta.get(f"name:og:{field}")


def _language(root: lxml_html.HtmlElement, meta: dict[str, str]) -> str | None:
    """``<html lang>`` (or ``xml:lang``), else the first tag of ``Content-Language``."""
    lang = normalize_space(root.get("lang") or root.get("xml:lang"))  # the HTML parser keeps the prefix
    if lang:
        return lang
    header = meta.get("http-equiv:content-language")
    if header:
        # The header may list several languages ("en, fr"); the page's language is the first.
        return normalize_space(header.split(",")[0])
    return None


def _prefixed(meta: dict[str, str], prefix: str) -> dict[str, str]:
    """``prefix:*`` values from ``property`` or ``name`` (pages use both), prefix dropped."""
    found: dict[str, str] = {}
    for attribute in ("property", "name"):
        head = f"{attribute}:{prefix}:"
        for key, value in meta.items():
            if key.startswith(head):
                found.setdefault(key[len(head):], value)
    return found


def _json_ld(root: lxml_html.HtmlElement) -> list[dict[str, Any]]:
    """The JSON-LD objects of the page (``@graph`` flattened); unreadable blocks skipped."""
    found: list[dict[str, Any]] = []
    for script in _LD_JSON(root):
        try:
            data = json.loads(script.text or "")
        except ValueError:
            continue
        stack = data if isinstance(data, list) else [data]
        while stack and len(found) < 50:
            node = stack.pop(0)
            if isinstance(node, dict):
                found.append(node)
                graph = node.get("@graph")
                if isinstance(graph, list):
                    stack.extend(graph)
    return found


def _ld_author(value: Any) -> str | None:
    if isinstance(value, list):
        names = [_ld_author(v) for v in value]
        return ", ".join(n for n in names if n) or None
    if isinstance(value, dict):
        value = value.get("name")
    return normalize_space(value) if isinstance(value, str) else None


def _published_and_author(root: lxml_html.HtmlElement,
                          meta: dict[str, str]) -> tuple[str | None, str | None]:
    published = next((meta[k] for k in _PUBLISHED_KEYS if k in meta), None)
    author = next((meta[k] for k in _AUTHOR_KEYS if k in meta), None)
    if published is None or author is None:
        for node in _json_ld(root):
            if published is None and isinstance(node.get("datePublished"), str):
                published = normalize_space(node["datePublished"])
            if author is None:
                author = _ld_author(node.get("author"))
    if published is None:
        for time_el in root.iter("time"):
            if time_el.get("datetime") and ("pubdate" in time_el.attrib
                                            or time_el.get("itemprop") == "datePublished"):
                published = normalize_space(time_el.get("datetime"))
                break
    return published, author


def _canonical(root: lxml_html.HtmlElement, url: str) -> str | None:
    hrefs = _CANONICAL(root)
    if not hrefs:
        return None
    base = url
    bases = _BASE_HREF(root)
    try:
        if bases:
            base = urljoin(url, str(bases[0]).strip())
        return urljoin(base, str(hrefs[0]).strip()) or None
    except ValueError:  # a malformed IPv6 host, for instance
        return None


def _metadata(root: lxml_html.HtmlElement, url: str = "") -> PageMetadata:
    meta = _meta_contents(root)
    published, author = _published_and_author(root, meta)
    return {
        "title": (
            _first_text(root, "//title[not(ancestor::svg)]")
            or _og(meta, "title")
            or _first_text(root, "//h1")
        ),
        "description": meta.get("name:description") or _og(meta, "description"),
        "language": _language(root, meta),
        "canonical": _canonical(root, url),
        "open_graph": _prefixed(meta, "og"),
        "twitter": _prefixed(meta, "twitter"),
        "published": published,
        "author": author,
    }


def page_metadata(html: str, url: str) -> PageMetadata:
    """The metadata of a page; each field ``None`` (or ``{}``) when the page has none.

    - title: ``<title>``, else ``og:title``, else the first ``<h1>``;
    - description: ``<meta name=description>``, else ``og:description``;
    - language: ``<html lang>``, else ``<meta http-equiv=content-language>``;
    - canonical: ``<link rel=canonical>``, made absolute (``<base href>``, ``url``);
    - open_graph / twitter: every ``og:*`` / ``twitter:*`` meta value, by
      the name after the prefix (``property`` or ``name``: pages use both);
    - published: ``article:published_time`` and kin, else JSON-LD
      ``datePublished``, else a ``<time pubdate>``;
    - author: ``<meta name=author>`` and kin, else JSON-LD ``author``.

    All values are whitespace-normalised. Never raises.
    """
    try:
        root = parse_html(html)
        if root is None:
            return _empty()
        return _metadata(root, url)
    except Exception:  # a metadata bug must never stop a crawl
        logger.warning("Metadata extraction failed for %s", url, exc_info=True)
        return _empty()


def _empty() -> PageMetadata:
    return {**_EMPTY, "open_graph": {}, "twitter": {}}  # type: ignore[typeddict-item]
