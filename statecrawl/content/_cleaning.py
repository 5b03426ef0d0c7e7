"""Tree cleaning around main-content detection: what is never text, too deep, or hidden.

:func:`clean_tree` removes code, media, form controls and decorative
images before the walk; :func:`flatten_deep` unwraps nesting a converter
would skip; :func:`hidden_parts` decides, once the content is known, which
hidden elements go and which are folded text that a click reveals (tab
panels, accordions) and are kept, unhidden.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree
from lxml import html as lxml_html

from statecrawl.content._names import chrome_words
from statecrawl.content._pagetext import is_hidden

__all__ = ["MAX_DEPTH", "clean_tree", "drop", "flatten_deep", "hidden_parts", "unhide"]

#: Elements whose content is code or media, never page text.
_CODE_TAGS: tuple[str, ...] = (
    "script", "style", "template", "iframe", "svg", "object", "embed", "canvas",
    "audio", "video", "source", "track", "link", "meta", "map",
)  # fmt: skip
#: Form controls. libxml2 sometimes nests a whole broken page in a ``<button>``,
#: so a control holding much text is unwrapped rather than dropped.
_CONTROL_TAGS: tuple[str, ...] = (
    "button", "select", "textarea", "input", "label", "option", "datalist", "output",
)  # fmt: skip
_CONTROL_MAX_TEXT = 200
_NOSCRIPT_MIN = 500  # a <noscript> with this much markup is the page itself (Discourse)

#: html-to-markdown skips whatever lies deeper than 1,024 elements; deeper
#: nesting (tables in tables, broken pages) is unwrapped to this depth, below
#: its 512-level limit for repairing broken markup.
MAX_DEPTH = 500
_DEPTH = "count(ancestor::*)"
_IS_TOO_DEEP = etree.XPath(f"boolean(descendant::*[{_DEPTH} > {MAX_DEPTH}])")
_TOO_DEEP = etree.XPath(f"descendant::*[{_DEPTH} > {MAX_DEPTH}]")
#: Table parts just above the cut: rows whose cells were unwrapped would hold bare text.
_CUT_TABLE_PARTS = etree.XPath(
    f"descendant::*[{_DEPTH} > {MAX_DEPTH - 4} and {_DEPTH} <= {MAX_DEPTH}]"
    "[self::table or self::thead or self::tbody or self::tfoot or self::tr or self::td or self::th]"
)

_FOLD_MAX_LINKS = 0.3  # a hidden part of the content with more links is a menu
_FOLD_TAGS: frozenset[str] = frozenset({"div", "section", "article", "details", "ul", "ol", "dl", "table"})
_FOLD_MIN = 100  # chars: a hidden container with less is a label or a tooltip
_FOLD_NEVER_ROLES: frozenset[str] = frozenset({
    "dialog", "alertdialog", "menu", "menubar", "navigation", "tooltip",
})  # fmt: skip

def drop(elements: Iterable[lxml_html.HtmlElement]) -> None:
    """Remove elements and their subtrees, keeping their tail text."""
    for el in elements:
        if el.getparent() is not None:
            el.drop_tree()


def _is_decorative(img: lxml_html.HtmlElement) -> bool:
    """``alt=""`` marks an image decorative (HTML spec); a 1x1 image is a tracking pixel."""
    alt = img.get("alt")
    if alt is not None and not alt.strip():
        return True
    return img.get("width") in ("0", "1") and img.get("height") in ("0", "1")


def clean_tree(root: lxml_html.HtmlElement, *, hidden: bool = True) -> None:
    """Remove, in place, what is never text: code, media, form controls, hidden parts.

    A ``<noscript>`` holding the markup of a page's text (Discourse serves
    its posts so) is unwrapped; other ``<noscript>`` (tracking pixels,
    "enable JavaScript") is dropped. Hidden elements go unless they hold
    half the page (a page saved with a modal open); :func:`extract_main`
    passes ``hidden=False`` because its walk does that test anyway.
    """
    for el in list(root.iter("noscript")):
        if len(el) and len(el.text_content()) >= _NOSCRIPT_MIN:
            el.drop_tag()
        elif el.getparent() is not None:
            el.drop_tree()
    etree.strip_elements(root, *_CODE_TAGS, with_tail=False)  # in C; the tail text stays
    for el in list(root.iter(*_CONTROL_TAGS)):
        if el.getparent() is None:
            continue
        if len(el.text_content()) < _CONTROL_MAX_TEXT:
            el.drop_tree()
        else:
            el.drop_tag()
    drop([img for img in root.iter("img") if _is_decorative(img)])
    if hidden:
        found = [el for el in root.iterdescendants() if isinstance(el.tag, str) and is_hidden(el)]
        if found:
            half = len(root.text_content()) / 2
            drop([el for el in found if len(el.text_content()) < half])


def flatten_deep(root: lxml_html.HtmlElement) -> None:
    """Unwrap, in place, the elements nested deeper than ``MAX_DEPTH``; their text stays.

    Table parts just above the cut become ``<div>`` s, so that the unwrapped
    text is not left bare inside a ``<tr>`` (where a converter drops it).
    The test costs ~0.5 ms on a typical page; :func:`extract_main` only
    calls this when its walk met deep nesting.
    """
    if not _IS_TOO_DEEP(root):
        return
    for el in _CUT_TABLE_PARTS(root):
        el.tag = "div"
    for el in _TOO_DEEP(root):
        el.drop_tag()


def unhide(elements: Iterable[lxml_html.HtmlElement]) -> None:
    """Clear the hiding attributes of hidden elements kept as content.

    A converter drops ``hidden`` and ``display: none`` elements; a page
    whose text sits in one (a React stream chunk ``<div hidden id="S:1">``,
    a wrapper that scripts reveal) must still give that text.
    """
    for el in elements:
        for name in ("hidden", "aria-hidden", "style"):
            el.attrib.pop(name, None)


def hidden_parts(
    content: lxml_html.HtmlElement, hidden: Iterable[lxml_html.HtmlElement]
) -> list[lxml_html.HtmlElement]:
    """Of the ``hidden`` elements, those to drop: all but the folded text of ``content``.

    Inside the content, a hidden container of text that is not chrome and
    not a link list is what a click reveals (tab panels, accordions, "read
    more"): it is kept and unhidden. Hidden menus, dialogs and the rest go.
    """
    dropped, kept = [], []
    for el in hidden:
        if _is_folded(el) and any(a is content for a in el.iterancestors()):
            kept.append(el)
        else:
            dropped.append(el)
    unhide(kept)
    return dropped


def _is_folded(el: lxml_html.HtmlElement) -> bool:
    """A panel that a click reveals: a container of text, not chrome nor a link list.

    A hidden paragraph or label on its own is text the page never shows.
    """
    if el.tag not in _FOLD_TAGS or (el.get("role") or "").strip().lower() in _FOLD_NEVER_ROLES:
        return False
    if chrome_words(el):
        return False
    text = len(el.text_content())
    return text >= _FOLD_MIN and sum(len(a.text_content()) for a in el.iter("a")) <= _FOLD_MAX_LINKS * text
