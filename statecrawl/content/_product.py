"""What a shop's product page holds besides its product, and text a page repeats.

A product page is a short description amid much more text about other
things: customer reviews, "you may also like" carousels, "customers also
viewed" strips. The reviews often hold more prose than the description,
so the Readability core of :mod:`statecrawl.content.maincontent` lands in
them, and the recommendation strips join the content as it grows. On a page
that declares itself a product (schema.org ``Product`` in JSON-LD,
``og:type`` product) or offers to add it to a cart,
:func:`product_extras` finds these blocks before the core is chosen:

* reviews: ``itemprop="review"``, ``itemtype`` schema.org ``Review``, or a
  class word ``review``/``reviews`` on a block holding prose (a star rating
  with a count is product data, and stays). Class only: an ``id`` is often
  a slug of the page's own text (``<div id="lg-washer-review">`` on a
  buying guide);
* recommendation widgets: class/id words such as ``carousel``, ``related``,
  ``upsell``, on a block with no prose (product names and prices; a slider
  of feature texts has prose, and stays) and under a quarter of the page
  (a shop's category grid named ``related-product`` is the page);
* the section under a heading such as "Similar items", "Customers also
  bought", "Recently viewed", as far up as it is that heading's alone.

A page with ``og:type`` article is no product page, whatever products it
reviews or sells: a buying guide keeps its verdicts, a pest-control page
its testimonials.

:func:`duplicates` removes, from the content found, blocks that repeat an
earlier block word for word: responsive pages ship the same section twice
(``d-none d-md-block`` and ``d-md-none``), and a converter shows both. Off
product pages only large repeats count (a whole article, a hero section):
a short paragraph may repeat on purpose (an API field described in two
objects, a quoted post), and code examples often do.
"""

from __future__ import annotations

import re

from lxml import html as lxml_html

from statecrawl.content._names import name_words, value_words
from statecrawl.content._pagetext import Block

__all__ = ["duplicates", "is_product_page", "product_extras"]

#: schema.org types of a product in JSON-LD, quoted as they appear in ``"@type": "Product"``.
_JSON_LD_PRODUCT: tuple[str, ...] = ('"Product"', '"ProductGroup"')
#: An add-to-cart control: these words in a button's or input's id, name, class, value or text.
_ADD_TO_CART: tuple[str, ...] = ("add to cart", "addtocart", "add to basket", "add to bag")
_SEPARATORS = str.maketrans("-_", "  ")

#: Class words of customer reviews.
_REVIEW_WORDS: frozenset[str] = frozenset({"review", "reviews"})
#: Class/id words of recommendation widgets. ``related`` and ``recommended``
#: are chrome words already, but ``product-related-products`` also has the
#: content word ``product``, which spares it as chrome.
_RECOMMENDATION_WORDS: frozenset[str] = frozenset({
    "carousel", "slider", "swiper", "related", "recommended", "recommendations", "upsell", "crosssell", "similar",
})  # fmt: skip
_RECOMMENDATION_MIN = 200  # chars: a smaller widget is a label or a single tile
_RECOMMENDATION_SHARE = 0.25  # a widget holding more of the page's text is the page (a category grid)
#: Headings of recommendation sections.
_RECOMMENDATION_HEADING = re.compile(
    r"similar (items|products)|related (items|products)|also (viewed|bought|like|love)|you might like"
    r"|recently viewed|frequently bought|recommended for you|customers who|complete the look|pairs well",
    re.IGNORECASE,
)
_HEADING_MAX = 80  # chars: a longer heading is a title of the content, not a section label
_HEADINGS: tuple[str, ...] = ("h1", "h2", "h3", "h4", "h5", "h6")

_REPEAT_MIN = 400  # chars: a smaller block may repeat on purpose...
_REPEAT_MIN_BLOCKS = 10  # ...and so may one of fewer blocks (a paragraph, a list item)
_PRODUCT_REPEAT_MIN = 100  # on a product page, any block of this size (a price box, a spec list)


def is_product_page(body: lxml_html.HtmlElement) -> bool:
    """Whether the page declares a product or has an add-to-cart control; call before cleaning.

    The JSON-LD ``<script>`` and ``<meta>`` it reads are gone after
    :func:`statecrawl.content._cleaning.clean_tree`. Microdata
    (``itemtype=".../Product"``) is not looked for: it needs a scan of
    every element (~0.3 ms a page), and on the benchmark pages that have it
    one of the other signs is there as well.
    """
    declared = False
    for el in body.getroottree().getroot().iter("script", "meta"):  # <head> too
        if el.tag == "meta":
            if el.get("property") == "og:type":
                kind = (el.get("content") or "").strip()
                if kind == "article":
                    return False
                declared = declared or "product" in kind
        elif not declared and el.get("type") == "application/ld+json" and el.text:
            declared = any(name in el.text for name in _JSON_LD_PRODUCT)
    return declared or any(_is_add_to_cart(el) for el in body.iter("button", "input"))


def _is_add_to_cart(el: lxml_html.HtmlElement) -> bool:
    text = el.text_content() if el.tag == "button" else ""
    value = f"{el.get('id', '')} {el.get('name', '')} {el.get('class', '')} {el.get('value', '')} {text}"
    value = value.lower().translate(_SEPARATORS)
    return any(words in value for words in _ADD_TO_CART)


def _is_review(el: lxml_html.HtmlElement) -> bool:
    if el.get("itemprop") in ("review", "reviews") or "schema.org/Review" in (el.get("itemtype") or ""):
        return True
    value = el.get("class")
    return bool(value) and not _REVIEW_WORDS.isdisjoint(value_words(value))


def _is_recommendation(el: lxml_html.HtmlElement) -> bool:
    return not _RECOMMENDATION_WORDS.isdisjoint(name_words(el))


def _heading_sections(blocks: list[Block]) -> set[Block]:
    """For each recommendation heading, the largest block that it alone heads.

    From the heading up, each ancestor must start with it and hold no other
    heading of its rank or above (that one starts another section), and
    hold at most ``_RECOMMENDATION_SHARE`` of the page's text.
    """
    page = blocks[-1]
    by_el: dict[lxml_html.HtmlElement, Block] | None = None
    sections: set[Block] = set()
    for heading in page.el.iter(_HEADINGS):
        text = heading.text_content()
        if len(text) > _HEADING_MAX or not _RECOMMENDATION_HEADING.search(text):
            continue
        if by_el is None:
            by_el = {block.el: block for block in blocks}
        rank = int(heading.tag[1])
        section = None
        for ancestor in heading.iterancestors():
            if ancestor is page.el:
                break
            block = by_el.get(ancestor)
            if block is None:  # inline (a <span> or <a> around the heading)
                continue
            inner = list(ancestor.iter(_HEADINGS))
            if inner[0] is not heading or any(int(h.tag[1]) <= rank for h in inner[1:]):
                break
            if block.text > _RECOMMENDATION_SHARE * page.text:
                break
            section = block
        if section is not None:
            sections.add(section)
    return sections


def product_extras(blocks: list[Block]) -> list[Block]:
    """The reviews and recommendation blocks of a product page, outermost only, for removal.

    ``blocks`` is :func:`statecrawl.content._pagetext.walk`'s list (post-order).
    """
    page = blocks[-1]
    sections = _heading_sections(blocks)
    found: list[Block] = []
    for block in reversed(blocks):  # outer first
        if block.removed or not block.text or block.parent is None:
            continue
        if found and found[-1].first <= block.index < found[-1].index:  # inside the last one found
            continue
        el = block.el
        if block in sections:
            found.append(block)
        elif _is_review(el):
            if block.prose:
                found.append(block)
        elif (
            _is_recommendation(el)
            and not block.prose
            and _RECOMMENDATION_MIN <= block.text <= _RECOMMENDATION_SHARE * page.text
        ):
            found.append(block)
    return found


def duplicates(container: Block, blocks: list[Block], product: bool) -> list[Block]:
    """The blocks of ``container`` that repeat an earlier one word for word, outermost only.

    Blocks with the same counts (text, links, commas, paragraph text) are
    compared by their text; the first in document order stays. Blocks with
    code (``<pre>``) never count as repeats.
    """
    min_text, min_blocks = (_PRODUCT_REPEAT_MIN, 0) if product else (_REPEAT_MIN, _REPEAT_MIN_BLOCKS)
    groups: dict[tuple[int, int, int, int], list[Block]] = {}
    for block in blocks[container.first : container.index]:
        if block.removed or block.text < min_text or block.index - block.first < min_blocks:
            continue
        groups.setdefault((block.text, block.link, block.commas, block.good), []).append(block)
    found: list[Block] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        # post-order: of two blocks, neither inside the other, the first in the document has the lower index
        kept = [group[0]]
        text = " ".join(group[0].el.text_content().split())
        for block in group[1:]:
            if any(block.contains(other) for other in kept):  # a wrapper of a kept block
                kept.append(block)
            elif next(block.el.iter("pre"), None) is None and " ".join(block.el.text_content().split()) == text:
                found.append(block)
    found.sort(key=lambda block: -block.index)  # outer first
    outer: list[Block] = []
    for block in found:
        if not any(other.first <= block.index < other.index for other in outer):
            outer.append(block)
    return outer
