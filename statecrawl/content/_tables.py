"""Tables made ready for the converter: a full grid per data table, layout tables as text.

html-to-markdown writes a GFM table from the rows it is given, cells
escaped (``|`` as ``\\|``) and on one line, the first row as the header. It
does not fill down a ``rowspan``, nor merge a two-row header, nor tell a
data table from a page laid out with one. :func:`prepare_tables` rewrites
each ``<table>`` under a root, in place, innermost first:

* a **layout table** becomes ``<div>`` s, so its content comes out as text
  rather than as one giant cell: ``role="presentation"``/``"none"``, a
  table of one cell or none, a table holding another table, or a table
  whose text is mostly in cells of prose (two blocks and some text, or
  very long text), such as a page column or a forum post (Readability's
  tests, adapted: one long description among many short cells is data);
* a **data table** is rebuilt as a grid of equal rows: a ``colspan`` cell
  is repeated in the header and followed by empty cells in the body, a
  ``rowspan`` cell is repeated down its rows, short rows are padded, and
  columns that only a too-wide ``colspan`` reaches are cut. The header is
  the ``<thead>`` rows, else the leading rows of ``<th>`` only; several
  header rows merge into one, column by column (``Price / USD``); a
  leading row of one cell across the table is a title, put before it. With
  no header, the first row is promoted, unless each row starts with a
  ``<th>`` (a key/value table): then the header is left empty rather than
  naming columns after the first key. ``<tfoot>`` rows go last; a list in
  a cell becomes ``a; b``; a table whose cells are all empty is dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

from lxml import etree
from lxml import html as lxml_html

__all__ = ["prepare_tables"]

_CELLS = ("td", "th")
_SECTIONS = ("thead", "tbody", "tfoot")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
#: Children that make a cell's content more than a value.
_BLOCKS: frozenset[str] = frozenset({
    "p", "ul", "ol", "pre", "blockquote", "div", "dl", "figure", "section", "article", "table",
    *_HEADINGS,
})  # fmt: skip
_PROSE_BLOCKS = 2  # a cell of this many blocks...
_PROSE_MIN = 200  # ...and this many characters is prose (a forum post, a page column)
_PROSE_LONG = 1000  # a cell of this many characters is prose whatever its markup
_PROSE_SHARE = 0.5  # a table is layout when prose cells hold this share of its text
_MAX_COLSPAN = 1000  # the HTML limits
_MAX_ROWSPAN = 65534
_MAX_SLOTS = 200_000  # cells of a rebuilt table, spans filled in: 10,000 rows of 20
_HEADER_JOIN = " / "

Row = tuple[lxml_html.HtmlElement, list[lxml_html.HtmlElement]]  # (its section, its cells)


def _is_cell(el: object) -> bool:
    return isinstance(getattr(el, "tag", None), str) and el.tag in _CELLS  # type: ignore[attr-defined]


def _rows_in(section: lxml_html.HtmlElement, children: Iterable[lxml_html.HtmlElement]) -> Iterator[Row]:
    """The rows among ``children`` of a table or section; bare cells (``<table><td>``) make one row."""
    bare: list[lxml_html.HtmlElement] = []
    for child in children:
        if _is_cell(child):
            bare.append(child)
            continue
        if bare:
            yield section, bare
            bare = []
        if child.tag == "tr":
            cells = [cell for cell in child if _is_cell(cell)]
            if cells:  # a row of no cells holds nothing (a rowspan reaching it is cut)
                yield section, cells
    if bare:
        yield section, bare


def _rows(table: lxml_html.HtmlElement) -> list[Row]:
    """Every row of ``table`` (not of tables inside it) in document order, ``<tfoot>`` rows last."""
    rows: list[Row] = []
    foot: list[Row] = []
    direct: list[lxml_html.HtmlElement] = []
    for child in table:
        if child.tag in _SECTIONS:
            rows.extend(_rows_in(table, direct))
            direct = []
            (foot if child.tag == "tfoot" else rows).extend(_rows_in(child, child))
        else:
            direct.append(child)
    rows.extend(_rows_in(table, direct))
    return rows + foot


def _is_prose(cell: lxml_html.HtmlElement, text: str) -> bool:
    """A cell of running text rather than a value: long, or blocks of some length, or a section."""
    if len(text) >= _PROSE_MIN and len("".join(text.split())) >= _PROSE_LONG:
        return True  # (markup indentation is no text)
    blocks = sum(1 for child in cell if isinstance(child.tag, str) and child.tag in _BLOCKS)
    if blocks < _PROSE_BLOCKS:
        return False
    return len("".join(text.split())) >= _PROSE_MIN or next(cell.iter(*_HEADINGS), None) is not None


def _is_layout(table: lxml_html.HtmlElement, cells: list[lxml_html.HtmlElement], texts: list[str]) -> bool:
    if (table.get("role") or "").strip().lower() in ("presentation", "none"):
        return True
    if len(cells) <= 1 or next(table.iterdescendants("table"), None) is not None:
        return True
    prose = sum(len(text) for cell, text in zip(cells, texts) if _is_prose(cell, text))
    return prose > 0 and prose >= _PROSE_SHARE * sum(len(text) for text in texts)


def _unwrap(table: lxml_html.HtmlElement, rows: list[Row]) -> None:
    """Turn a layout table into ``<div>`` s: each cell a block, rows and sections gone."""
    for _, cells in rows:
        for cell in cells:
            cell.tag = "div"
            cell.attrib.clear()
    for el in list(table):
        if el.tag in ("colgroup", "col"):
            el.drop_tree()
        elif el.tag == "caption":
            el.tag = "div"
    for section in list(table.iterchildren(*_SECTIONS)):
        for row in list(section.iterchildren("tr")):
            row.drop_tag()
        section.drop_tag()
    for row in list(table.iterchildren("tr")):
        row.drop_tag()
    table.tag = "div"
    for attribute in ("role", "border", "cellpadding", "cellspacing", "summary"):
        table.attrib.pop(attribute, None)


def _span(value: str | None, limit: int) -> int:
    """A ``colspan``/``rowspan`` value as a browser reads it: digits first, 1 if none; 0 kept."""
    digits = ""
    for char in (value or "").strip():
        if not char.isdigit():
            break
        digits += char
    return min(int(digits), limit) if digits else 1


Slot = tuple[lxml_html.HtmlElement, int, int]  # (cell, rows below its top, columns right of its left)


def _grid(rows: list[Row]) -> list[list[Slot | None]] | None:
    """The HTML table model: each row's slots, spans laid out (a rowspan stays in its section).

    None when the spans would make more than ``_MAX_SLOTS`` slots.
    """
    grid: list[list[Slot | None]] = [[] for _ in rows]
    size = 0
    ends: list[int] = []
    end = len(rows)
    for index in range(len(rows) - 1, -1, -1):  # where each row's section ends
        if index + 1 < len(rows) and rows[index + 1][0] is not rows[index][0]:
            end = index + 1
        ends.append(end)
    ends.reverse()
    # No span needs more columns than the longest row has cells (``colspan="100"``
    # for "all of them"): a bound that keeps a hostile table from filling memory.
    widest = max(len(cells) for _, cells in rows)
    for r, (_, cells) in enumerate(rows):
        column = 0
        for cell in cells:
            line = grid[r]
            while column < len(line) and line[column] is not None:
                column += 1
            colspan = max(_span(cell.get("colspan"), widest), 1)
            rowspan = _span(cell.get("rowspan"), _MAX_ROWSPAN)
            last = ends[r] if rowspan == 0 else min(r + rowspan, ends[r])
            for down in range(max(last - r, 1)):
                slots = grid[r + down]
                if len(slots) < column + colspan:
                    size += column + colspan - len(slots)
                    if size > _MAX_SLOTS:
                        return None
                    slots.extend([None] * (column + colspan - len(slots)))
                for across in range(colspan):
                    slots[column + across] = (cell, down, across)
            column += colspan
    return grid


def _width(grid: list[list[Slot | None]]) -> int:
    """The columns some cell starts in: beyond them, only an oversized ``colspan`` reaches."""
    width = 0
    for slots in grid:
        for column, slot in enumerate(slots):
            if slot is not None and slot[2] == 0 and column >= width:
                width = column + 1
    return width


def _header_rows(rows: list[Row], width: int) -> int:
    """How many leading rows are the header: the ``<thead>`` rows, else the rows of ``<th>`` only.

    A row of one cell across the table ends a ``<th>`` header: it heads a
    group of body rows (``Starting a unit``), not a column.
    """
    heads = sum(1 for section, _ in rows if section.tag == "thead")
    if heads:
        return heads
    for index, (_, cells) in enumerate(rows):
        if any(cell.tag != "th" for cell in cells):
            return index
        if index and len(cells) == 1 and _span(cells[0].get("colspan"), _MAX_COLSPAN) >= width > 1:
            return index
    return 0  # all <th>: no body to head


def _cell(tag: str, text: str | None = None) -> lxml_html.HtmlElement:
    el = lxml_html.Element(tag)
    el.text = text
    return el


def _copy(cell: lxml_html.HtmlElement, tag: str) -> lxml_html.HtmlElement:
    clone = copy.deepcopy(cell)
    clone.tail = None
    clone.tag = tag
    return clone


def _header(grid: list[list[Slot | None]], count: int, width: int) -> list[lxml_html.HtmlElement]:
    """One header row from ``count`` header rows of the grid."""
    if count == 1:
        slots = grid[0] + [None] * (width - len(grid[0]))
        return [_cell("th") if slot is None else _copy(slot[0], "th") for slot in slots[:width]]
    header = []
    for column in range(width):
        names: list[str] = []
        for slots in grid[:count]:
            slot = slots[column] if column < len(slots) else None
            name = " ".join(slot[0].text_content().split()) if slot is not None else ""
            if name and (not names or names[-1] != name):
                names.append(name)
        header.append(_cell("th", _HEADER_JOIN.join(names)))
    return header


def _body_cell(slot: Slot | None) -> lxml_html.HtmlElement:
    if slot is None or slot[2] > 0:
        return _cell("td")
    cell, down, _ = slot
    return _copy(cell, cell.tag) if down > 0 else cell


def _titles(table: lxml_html.HtmlElement, rows: list[Row], width: int) -> int:
    """Move the leading rows that are one cell across the table (a title) before it, as blocks."""
    count = 0
    while count < len(rows) - 1 and width > 1:
        cells = rows[count][1]
        if len(cells) != 1 or _span(cells[0].get("colspan"), _MAX_COLSPAN) < width:
            break
        title = cells[0]
        block = lxml_html.Element("div")
        block.text = title.text
        block.extend(list(title))
        table.addprevious(block)
        count += 1
    return count


def _rebuild(table: lxml_html.HtmlElement, rows: list[Row]) -> None:
    grid = _grid(rows)
    if grid is None:  # spans beyond reason (a hostile page): the converter's own handling
        return
    width = _width(grid)
    titles = _titles(table, rows, width)
    rows, grid = rows[titles:], grid[titles:]
    count = _header_rows(rows, width)
    if count:
        header = _header(grid, count, width)
    elif rows[0][1][0].tag == "th":  # key/value rows: no column names
        header = [_cell("th") for _ in range(width)]
    else:
        header, count = _header(grid, 1, width), 1
    body = [[_body_cell(slots[c] if c < len(slots) else None) for c in range(width)]
            for slots in grid[count:] if any(slot is not None for slot in slots)]
    for child in list(table):
        if child.tag != "caption":
            table.remove(child)
    thead = etree.SubElement(table, "thead")
    line = etree.SubElement(thead, "tr")
    for cell in header:
        line.append(cell)
    tbody = etree.SubElement(table, "tbody")
    for cells in body:
        line = etree.SubElement(tbody, "tr")
        for cell in cells:
            cell.tail = None
            cell.attrib.pop("colspan", None)
            cell.attrib.pop("rowspan", None)
            line.append(cell)
    for cell in header:
        cell.tail = None
        cell.attrib.pop("colspan", None)
        cell.attrib.pop("rowspan", None)


def _inline_item(item: lxml_html.HtmlElement) -> None:
    """A list item in a cell becomes text ending in ``;`` (but the last): ``a; b`` rather than ``a b``."""
    item.tag = "span"
    following = item.getnext()
    if following is not None and following.tag in ("li", "span"):
        item.tail = "; "
    parent = item.getparent()
    if parent is not None and parent.tag in ("ul", "ol"):
        parent.tag = "span"


def _is_plain(rows: list[Row]) -> bool:
    """Already what the converter needs: no spans, equal rows, one header row or none, no foot."""
    width = len(rows[0][1])
    if rows[0][1][0].tag == "th" and any(cell.tag != "th" for cell in rows[0][1]):
        return False  # key/value rows
    for index, (section, cells) in enumerate(rows):
        if len(cells) != width or section.tag == "tfoot" or (index and section.tag == "thead"):
            return False
        for cell in cells:
            if "colspan" in cell.attrib or "rowspan" in cell.attrib:
                return False
    return len(rows) < 2 or any(cell.tag != "th" for cell in rows[1][1])  # one header row


def prepare_tables(root: lxml_html.HtmlElement) -> None:
    """Rewrite, in place, every ``<table>`` under ``root`` as the module docstring says.

    A ``root`` that is itself part of a table (main-content detection may
    choose a row) becomes a ``<div>`` of blocks: a row out of its table is
    no table.
    """
    if root.tag in ("tr", *_SECTIONS, *_CELLS):
        rows = [root, *root.iterchildren("tr")]
        for row in rows:
            for cell in row.iterchildren(*_CELLS):
                cell.tag = "div"
        for row in rows[1:]:
            row.drop_tag()
        root.tag = "div"
    for table in reversed(list(root.iter("table"))):  # innermost first
        rows = _rows(table)
        cells = [cell for _, row_cells in rows for cell in row_cells]
        texts = [cell.text_content() for cell in cells]
        if _is_layout(table, cells, texts):
            _unwrap(table, rows)
        elif not any(text.strip() for text in texts) and next(table.iter("img"), None) is None:
            if table.getparent() is not None:
                table.drop_tree()
        else:
            for item in list(table.iter("li")):  # own lists only: a table in a table is layout
                _inline_item(item)
            if not _is_plain(rows):
                _rebuild(table, rows)
