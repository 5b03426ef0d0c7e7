"""Links and images made ready for the converter: no empty link, no image without a use.

html-to-markdown writes every ``<a>`` as ``[text](href)`` and every
``<img>`` as ``![alt](src)``, even when the text is empty, the alt is
missing or the link goes nowhere. :func:`prepare_links` rewrites, in
place, the links and images under a root:

* images, by the ``images`` mode: ``"alt"`` keeps those with alt text
  (the words a reader, or a model, gets from them) unless the alt text
  only repeats the text beside the image (a product card's image alt is
  its name, written again under it), ``"all"`` keeps every one,
  ``"none"`` keeps none. An image dropped from a link leaves its alt
  text as the link's label, so the link keeps its name; an image with alt
  text but no address at all becomes its alt text;
* a link with nothing to show (no text, no image left) is dropped, with
  no trace: ``[](url)`` never appears;
* a heading's permalink (``<h2>Usage<a href="#usage">¶</a></h2>``: a
  link to a fragment whose text is only a mark such as ``¶``, ``#``,
  ``§``) is dropped: it repeats the heading as noise;
* a link that goes nowhere -- no ``href``, ``href=""``, ``"#"``,
  ``javascript:`` -- becomes its text (a ``#section`` link is kept: it
  names a place in the page), and so does a link around other links
  (broken markup; Markdown links cannot nest).
"""

from __future__ import annotations

from lxml import etree
from lxml import html as lxml_html

__all__ = ["IMAGES", "prepare_links"]

#: The ``images`` modes of :func:`statecrawl.content.markdown.to_markdown`.
IMAGES: tuple[str, ...] = ("alt", "all", "none")

#: Where html-to-markdown finds an image's address (lazy-loading pages too).
_SOURCES = ("src", "data-src", "data-lazy-src", "data-original", "srcset", "data-srcset")
_HAS_SOURCE = " or ".join(f"normalize-space(@{name})" for name in _SOURCES)
_HAS_ALT = "normalize-space(@alt)"  # XPath: images are fewer than links, and most are kept
#: The images each mode does not keep, found in C: a page may have hundreds.
_DROPPED_IMAGES: dict[str, etree.XPath] = {
    "alt": etree.XPath(f"descendant-or-self::img[not({_HAS_ALT}) or not({_HAS_SOURCE})]"),
    "all": etree.XPath(f"descendant-or-self::img[not({_HAS_SOURCE})]"),
    "none": etree.XPath("descendant-or-self::img"),
}
_REPEAT_MIN = 3  # chars: a shorter alt text ("A", "x") is never a repeat
_REPEAT_LEVELS = 3  # ancestors searched for the text an alt text repeats
_BLANKS = " \t\n\r\f\v\xa0\u200b\u200c\u200d\u2060\ufeff"
#: ``href`` values that go nowhere, once blanks are removed and letters lowered.
_NOWHERE = ("", "#", "#!")
_SCRIPT_SCHEMES = ("javascript:", "vbscript:")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
#: The text of a heading's permalink (Sphinx, MkDocs, Docusaurus, many blogs).
_PERMALINK_MARKS: frozenset[str] = frozenset({"¶", "#", "§", "🔗", "link", "permalink"})


def _replace_with_text(el: lxml_html.HtmlElement, text: str) -> None:
    """Put ``text`` where ``el`` was (before its tail) and remove ``el``."""
    el.tail = text + (el.tail or "")
    el.drop_tree()


def _repeats_its_text(img: lxml_html.HtmlElement) -> bool:
    """Whether the image's alt text is already written beside it (a product card's name).

    The text of the nearest of its three closest ancestors that has any is
    searched for the alt text as whole words; alt text shorter than
    ``_REPEAT_MIN`` chars is never taken for a repeat.
    """
    alt = " ".join((img.get("alt") or "").split()).lower()
    if len(alt) < _REPEAT_MIN:
        return False
    el = img
    for _ in range(_REPEAT_LEVELS):
        el = el.getparent()
        if el is None:
            return False
        text = " ".join(el.text_content().split()).lower()
        if text:
            found = text.find(alt)
            while found >= 0:
                end = found + len(alt)
                if (found == 0 or not text[found - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
                    return True
                found = text.find(alt, found + 1)
            return False
    return False


def _prepare_images(root: lxml_html.HtmlElement, images: str) -> None:
    if images == "alt":  # an alt text written beside the image: the image adds no words
        drop = [img for img in root.iter("img") if _repeats_its_text(img)]
        for img in drop:
            img.drop_tree()
    for img in _DROPPED_IMAGES[images](root):
        if img.getparent() is None:
            continue
        alt = " ".join((img.get("alt") or "").split())
        sourceless = images != "none" or not any((img.get(name) or "").strip() for name in _SOURCES)
        if alt and (sourceless or next(img.iterancestors("a"), None) is not None):
            _replace_with_text(img, alt)
        else:
            img.drop_tree()


def _goes_nowhere(href: str | None) -> bool:
    if href is None:
        return True
    if len(href) > 3 and href[0] not in " \t\n\r#" and "script:" not in href[:24].lower():
        return False  # the common case, decided without building a string
    value = "".join(href.split()).lower()
    return value in _NOWHERE or value.startswith(_SCRIPT_SCHEMES)


def _is_empty(link: lxml_html.HtmlElement) -> bool:
    """Nothing to show: no text but blanks, no image."""
    if link.text and link.text.strip(_BLANKS):
        return False
    if not len(link):
        return True
    return not etree.tostring(link, method="text", encoding="unicode", with_tail=False).strip(
        _BLANKS) and next(link.iter("img"), None) is None


def _is_permalink(link: lxml_html.HtmlElement) -> bool:
    """A heading's own link to itself, shown as a mark (``¶``)."""
    text = link.text
    if not text or len(text) > 12 or len(link):
        return False
    if text.strip(_BLANKS).lower() not in _PERMALINK_MARKS:
        return False
    return (link.get("href") or "").strip().startswith("#") and next(
        link.iterancestors(*_HEADINGS), None) is not None


def prepare_links(root: lxml_html.HtmlElement, images: str) -> None:
    """Rewrite, in place, the images and links under ``root`` as the module docstring says.

    ``images`` is one of :data:`IMAGES` (checked by the caller). A loop
    over ``iter("a")`` with the common case first: an XPath predicate per
    link costs libxml2 more than this on a page of a thousand links.
    """
    _prepare_images(root, images)
    empty, nowhere = [], []
    for link in root.iter("a"):
        if len(link) and next(link.iterdescendants("a"), None) is not None:
            nowhere.append(link)  # a link around links (broken markup): Markdown cannot nest them
        elif _is_empty(link) or _is_permalink(link):
            empty.append(link)
        elif _goes_nowhere(link.get("href")):
            nowhere.append(link)
    for link in reversed(empty):  # innermost first: nested links (broken pages)
        if link.getparent() is not None:
            link.drop_tree()
    for link in nowhere:
        if link.getparent() is not None:
            link.drop_tag()
