"""The item list of a listing page: many sibling teasers of one kind, each with a link.

A listing, a shop category or a news front is a list of *items*: sibling
elements of the same tag and class (``<li class="product">``,
``<article class="teaser">``), each holding a link and some text. Readability
scores paragraphs, and a list of short items has few: the core it finds on
such a page is one teaser with a long excerpt, or the SEO text under a
product grid, or nothing at all. :func:`item_lists` finds the lists in the
:class:`~statecrawl.content._pagetext.Block` counts of the walk (no second
walk over the tree), and two rules use them:

* :func:`with_list` -- a core found inside one item of a list becomes the
  whole list; a core beside a list holding more text than itself (the SEO
  text of a shop category) becomes their nearest common ancestor, so that
  the list and the text both come out.
* :func:`narrow` -- a page without prose gets its ``<main>`` or whole body
  (:mod:`statecrawl.content.maincontent`): when a list holds a good share
  of that, the content is the list with what little sits around it (its
  heading, a result count, an intro), not the filters and promos beside it.

A list must look like teasers, not like a menu or an article: enough items,
short ones, not all links (a menu, a headline rail) and not mostly prose
(the sections of an article, the posts of a thread).
"""

from __future__ import annotations

from statecrawl.content._pagetext import Block

__all__ = ["item_lists", "narrow", "with_list"]

_MIN_ITEMS = 5  # siblings of one tag and class make a list from this many...
_MAX_ITEM = 400  # ...of at most this many chars of text each on average
_MAX_LINKS = 0.9  # a list with more of its text in links is a menu or a headline rail
_MAX_PROSE = 0.5  # a list with more of its text in prose is an article's sections or posts
_OVER_CORE = 1.0  # a list beside the core with this many times its text joins it
_NARROW_SHARE = 0.4  # a list holding this share of a prose-less content is that content...
_CLIMB = 1.2  # ...with the ancestors that add at most this factor of text to it...
_INTRO = 300  # ...or at most this many chars (a heading and an intro)


def item_lists(blocks: list[Block]) -> list[tuple[int, Block]]:
    """The item lists of the page as (text of the items, parent), most text first.

    An item is a block holding link text, or the inline element (``<a
    class="card">``) wrapping such blocks; items are grouped by parent,
    tag and class. Removed blocks (chrome) count for nothing.
    """
    groups: dict[tuple[Block, str, str | None], dict[int, int]] = {}
    for block in blocks:
        parent = block.parent
        if block.removed or not block.link or parent is None:
            continue
        item = block
        if parent.index < 0:  # an inline parent is not in ``blocks``: it is the item
            item, parent = parent, parent.parent
            if parent is None or parent.index < 0:
                continue
        key = (parent, item.el.tag, item.el.get("class"))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {}
        group[id(item)] = max(group.get(id(item), 0), block.text)
    found = []
    for (parent, _tag, _class), items in groups.items():
        count, text = len(items), sum(items.values())
        if (
            count >= _MIN_ITEMS
            and text <= _MAX_ITEM * count
            and parent.link <= _MAX_LINKS * parent.text
            and parent.prose <= _MAX_PROSE * parent.text
        ):
            found.append((text, parent))
    found.sort(key=lambda pair: -pair[0])
    return found


def _block(block: Block) -> Block:
    """The nearest block element at or above ``block`` (skipping inline elements)."""
    while block.index < 0 and block.parent is not None:
        block = block.parent
    return block


def with_list(core: Block, blocks: list[Block]) -> Block:
    """The core, widened to the page's main item list where it is in one item or beside a bigger list."""
    lists = item_lists(blocks)
    if not lists:
        return core
    text, parent = lists[0]
    if parent is core or core.contains(parent):
        return core
    if parent.contains(core):
        return parent
    if text < _OVER_CORE * core.text:
        return core
    above = set()
    ancestor: Block | None = core
    while ancestor is not None:
        above.add(id(ancestor))
        ancestor = ancestor.parent
    common = parent
    while id(common) not in above:
        common = common.parent  # type: ignore[assignment]  # both lie under <body>
    return _block(common)


def narrow(container: Block, blocks: list[Block]) -> Block:
    """The main item list of a prose-less content, with its heading and intro; else the content."""
    lists = [pair for pair in item_lists(blocks) if container.contains(pair[1])]
    if not lists:
        return container
    parent = lists[0][1]
    if parent.text < _NARROW_SHARE * container.text:
        return container
    allowance = max((_CLIMB - 1) * parent.text, _INTRO)
    top = parent
    while top.parent is not None and top.parent is not container and top.parent.text - parent.text <= allowance:
        top = top.parent
    return _block(top)
