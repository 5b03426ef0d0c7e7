"""Read facts out of an HTML page: a parse that never fails, and page metadata.

Crawled pages are whatever a server sent: truncated downloads, broken
nesting, binary bodies served as ``text/html``, XML declarations inside a
``str``. Everything here therefore returns a value on any input and never
raises; a page that cannot be understood yields ``None`` fields, not a crash
in the middle of a crawl.

:func:`parse_html` is the single place where statecrawl turns a page into an
lxml tree, so :mod:`statecrawl.markdown` (and the later main-content
extractor) parse pages the same way.
"""

from __future__ import annotations

import logging
from typing import TypedDict

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
        for attribute in ("name", "property", "http-equiv"):
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


def _metadata(root: lxml_html.HtmlElement) -> PageMetadata:
    meta = _meta_contents(root)
    return {
        "title": (
            _first_text(root, "//title[not(ancestor::svg)]")
            or _og(meta, "title")
            or _first_text(root, "//h1")
        ),
        "description": meta.get("name:description") or _og(meta, "description"),
        "language": _language(root, meta),
    }


def page_metadata(html: str, url: str) -> PageMetadata:
    """Title, description and language of a page; each ``None`` when the page has none.

    - title: ``<title>``, else ``og:title``, else the first ``<h1>``;
    - description: ``<meta name=description>``, else ``og:description``;
    - language: ``<html lang>``, else ``<meta http-equiv=content-language>``.

    All values are whitespace-normalised. ``url`` is accepted so every
    page-level extractor has the same ``(html, url)`` signature; nothing
    here is relative yet. Never raises.
    """
    empty: PageMetadata = {"title": None, "description": None, "language": None}
    try:
        root = parse_html(html)
        if root is None:
            return empty
        return _metadata(root)
    except Exception:  # a metadata bug must never stop a crawl
        logger.warning("Metadata extraction failed for %s", url, exc_info=True)
        return empty
