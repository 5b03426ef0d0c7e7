"""Tests for the Markdown-for-LLMs rules of statecrawl.content.markdown (issue 12, part 3).

One test (or parametrized case) per rule, each on a small fragment whose
exact Markdown is asserted: tables stay tables (spans filled in, one
header row, layout tables as text), code blocks keep their language and
their text and lose their line numbers, no empty or dead link, images
kept by the ``images`` mode. Fragments have no chrome, so main-content
detection keeps them whole; whole pages are in ``test_golden.py``.
"""

from __future__ import annotations

import time

import pytest

from statecrawl.content.markdown import to_markdown

URL = "https://example.com/docs/page.html"


def md(html: str, **kwargs: str | bool) -> str:
    page = f"<html><body><main>{html}</main></body></html>"
    return to_markdown(page, URL, **kwargs)  # type: ignore[arg-type]


# -- tables -----------------------------------------------------------------------


def test_colspan_repeated_in_the_header_and_followed_by_empty_cells_in_the_body() -> None:
    html = ("<table><tr><th>Name</th><th colspan='2'>Size</th></tr>"
            "<tr><td colspan='2'>wide</td><td>x</td></tr><tr><td>a</td><td>b</td><td>c</td></tr></table>")
    assert md(html) == (
        "| Name | Size | Size |\n| --- | --- | --- |\n| wide |  | x |\n| a | b | c |"
    )


def test_rowspan_filled_down_within_its_section() -> None:
    html = ("<table><thead><tr><th>Group</th><th>Item</th></tr></thead><tbody>"
            "<tr><td rowspan='5'>fruit</td><td>apple</td></tr><tr><td>pear</td></tr></tbody>"
            "<tbody><tr><td rowspan='0'>veg</td><td>leek</td></tr><tr><td>kale</td></tr></tbody></table>")
    assert md(html) == (
        "| Group | Item |\n| --- | --- |\n| fruit | apple |\n| fruit | pear |\n| veg | leek |\n| veg | kale |"
    )


def test_header_rows_merge_column_by_column() -> None:
    html = ("<table><thead><tr><th rowspan='2'>Model</th><th colspan='2'>Price</th></tr>"
            "<tr><th>USD</th><th>EUR</th></tr></thead><tr><td>A1</td><td>10</td><td>9</td></tr></table>")
    assert md(html) == "| Model | Price / USD | Price / EUR |\n| --- | --- | --- |\n| A1 | 10 | 9 |"


@pytest.mark.parametrize(("rows", "expected"), [
    # a first row of <th> only is the header, though it is not in a <thead>
    ("<tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr>", "| k | v |\n| --- | --- |\n| a | 1 |"),
    # no header at all: the first row is promoted
    ("<tr><td>k</td><td>v</td></tr><tr><td>a</td><td>1</td></tr>", "| k | v |\n| --- | --- |\n| a | 1 |"),
    # key/value rows (a <th> heading each row): an empty header, not the first key
    ("<tr><th>Weight</th><td>1 kg</td></tr><tr><th>Colour</th><td>red</td></tr>",
     "|  |  |\n| --- | --- |\n| Weight | 1 kg |\n| Colour | red |"),
])
def test_header_row_detection(rows: str, expected: str) -> None:
    assert md(f"<table>{rows}</table>") == expected


def test_cells_stay_on_one_line_and_pipes_are_escaped() -> None:
    html = ("<table><tr><th>Option</th><th>Notes</th></tr><tr><td><code>a|b</code></td>"
            "<td><p>First.</p><p>Second<br>line | more.</p></td></tr></table>")
    assert md(html) == (
        "| Option | Notes |\n| --- | --- |\n| `a\\|b` | First. Second line \\| more. |"
    )


def test_ragged_rows_padded_and_oversized_colspan_cut() -> None:
    html = ("<table><tr><th>a</th><th>b</th><th>c</th></tr><tr><td>1</td></tr>"
            "<tr><td colspan='99'>all columns</td></tr></table>")
    assert md(html) == (
        "| a | b | c |\n| --- | --- | --- |\n| 1 |  |  |\n| all columns |  |  |"
    )


def test_footer_rows_go_last_and_empty_tables_go() -> None:
    html = ("<table><thead><tr><th>x</th><th>n</th></tr></thead><tfoot><tr><td>total</td><td>3</td></tr>"
            "</tfoot><tbody><tr><td>a</td><td>1</td></tr><tr><td>b</td><td>2</td></tr></tbody></table>"
            "<table><tr><td> </td><td></td></tr><tr><td></td><td>&nbsp;</td></tr></table>")
    assert md(html) == "| x | n |\n| --- | --- |\n| a | 1 |\n| b | 2 |\n| total | 3 |"


@pytest.mark.parametrize(("table", "expected"), [
    ("<table role='presentation'><tr><td>Left</td><td>Right</td></tr></table>", "Left\n\nRight"),
    ("<table><tr><td><p>Left</p><p>Right</p></td></tr></table>", "Left\n\nRight"),  # one cell: a box
    ("<table><tr><td><p>Left</p></td><td><table><tr><td>Right</td><td>!</td></tr></table></td></tr></table>",
     "Left\n\n| Right | ! |\n| --- | --- |"),  # the table in a table is data, the outer one layout
    ("<table><tr><td>Left</td><td><h2>Right</h2><p>Text.</p></td></tr></table>",
     "Left\n\n## Right\n\nText."),  # a heading in a cell
])
def test_layout_tables_become_text(table: str, expected: str) -> None:
    assert md(table) == expected


def test_layout_table_with_a_column_of_prose() -> None:
    prose = "<p>" + "A sentence of the article body, long enough to count. " * 3 + "</p>"
    html = f"<table><tr><td><a href='/'>Home</a></td><td><h1>Title</h1>{prose}{prose}</td></tr></table>"
    assert md(html, only_main_content=False) == (
        "[Home](https://example.com/)\n\n# Title\n\n" + "\n\n".join(
            ["A sentence of the article body, long enough to count. " * 2
             + "A sentence of the article body, long enough to count."] * 2)
    )


def test_table_nested_in_a_layout_table_stays_a_table() -> None:
    html = ("<table><tr><td><h2>Specs</h2><table><tr><th>k</th><th>v</th></tr>"
            "<tr><td>a</td><td>1</td></tr></table></td></tr></table>")
    assert md(html) == "## Specs\n\n| k | v |\n| --- | --- |\n| a | 1 |"


# -- code -------------------------------------------------------------------------

CODE = "x = 1"


@pytest.mark.parametrize(("html", "language"), [
    (f"<pre><code class='language-python'>{CODE}</code></pre>", "python"),
    (f"<pre class='lang-js'>{CODE}</pre>", "js"),
    (f"<div class='highlight highlight-source-python'><pre>{CODE}</pre></div>", "python"),  # GitHub
    (f"<div class='highlight highlight-text-html-basic'><pre>{CODE}</pre></div>", "html"),  # GitHub
    (f"<div class='highlight-python notranslate'><div class='highlight'><pre>{CODE}</pre></div></div>",
     "python"),  # Sphinx
    (f"<div class='language-ruby highlighter-rouge'><div class='highlight'><pre class='highlight'><code>"
     f"{CODE}</code></pre></div></div>", "ruby"),  # Jekyll
    (f"<pre data-lang='rust'>{CODE}</pre>", "rust"),
    (f"<pre><code data-language='kotlin'>{CODE}</code></pre>", "kotlin"),
    (f"<pre class='brush: php; gutter: false'>{CODE}</pre>", "php"),  # SyntaxHighlighter
    (f"<pre class='python'>{CODE}</pre>", "python"),  # GeSHi
    (f"<pre><code class='hljs go'>{CODE}</code></pre>", "go"),
    (f"<div class='sourceCode'><pre class='sourceCode python'><code class='sourceCode python'>{CODE}"
     "</code></pre></div>", "python"),  # pandoc
    (f"<pre><code class='language-none'>{CODE}</code></pre>", ""),
    (f"<pre class='prettyprint'>{CODE}</pre>", ""),
])
def test_code_block_language(html: str, language: str) -> None:
    assert md(html) == f"```{language}\n{CODE}\n```"


def test_a_wrapper_of_several_blocks_names_no_language() -> None:
    assert md("<div class='lang-en'><pre>a</pre><pre>b</pre></div>") == "```\na\n```\n\n```\nb\n```"


def test_code_text_is_verbatim() -> None:
    code = "def f(x):\n\tif x &lt; 1 and *p* or _q_:\n\n\n        return '# [x](y) | z'\n"
    assert md(f"<pre><code class='language-python'>{code}</code></pre>") == (
        "```python\ndef f(x):\n\tif x < 1 and *p* or _q_:\n\n\n        return '# [x](y) | z'\n```"
    )


def test_highlighter_spans_flattened() -> None:
    html = ("<pre class='language-python'><span class='kn'>import</span> <span class='nn'>os</span>\n"
            "<span class='nb'>print</span>(<span class='s2'>\"a  b\"</span>)</pre>")
    assert md(html) == '```python\nimport os\nprint("a  b")\n```'


@pytest.mark.parametrize("html", [
    # Pygments / Sphinx linenos="table"
    "<div class='highlight-python'><table class='highlighttable'><tr><td class='linenos'>"
    "<div class='linenodiv'><pre>1\n2</pre></div></td><td class='code'><div class='highlight'>"
    "<pre><span class='n'>a</span> = 1\nb = 2\n</pre></div></td></tr></table></div>",
    # Pygments linenos="inline"
    "<div class='highlight-python'><pre><span class='linenos'>1</span>a = 1\n"
    "<span class='linenos'>2</span>b = 2\n</pre></div>",
    # Hugo / Chroma table
    "<div class='highlight'><table class='lntable'><tr><td class='lntd'><pre class='chroma'><code>"
    "<span class='lnt'>1\n</span><span class='lnt'>2\n</span></code></pre></td><td class='lntd'>"
    "<pre class='chroma'><code class='language-python' data-lang='python'>a = 1\nb = 2\n</code></pre>"
    "</td></tr></table></div>",
    # Jekyll / Rouge table inside <pre>
    "<div class='language-python highlighter-rouge'><pre class='highlight'><code>"
    "<table class='rouge-table'><tbody><tr><td class='rouge-gutter gl'><pre class='lineno'>1\n2\n</pre>"
    "</td><td class='rouge-code'><pre>a = 1\nb = 2\n</pre></td></tr></tbody></table></code></pre></div>",
    # highlight.js line-numbers plugin: a row per line, numbers drawn by CSS
    "<pre><code class='hljs language-python'><table class='hljs-ln'><tbody>"
    "<tr><td class='hljs-ln-line hljs-ln-numbers'><div class='hljs-ln-n' data-line-number='1'></div></td>"
    "<td class='hljs-ln-line hljs-ln-code'>a = 1</td></tr>"
    "<tr><td class='hljs-ln-line hljs-ln-numbers'><div class='hljs-ln-n' data-line-number='2'></div></td>"
    "<td class='hljs-ln-line hljs-ln-code'>b = 2</td></tr></tbody></table></code></pre>",
    # Prism line-numbers plugin
    "<pre class='line-numbers language-python'><code class='language-python'>a = 1\nb = 2"
    "<span aria-hidden='true' class='line-numbers-rows'><span></span><span></span></span></code></pre>",
])
def test_line_number_gutters_are_not_code(html: str) -> None:
    assert md(html) == "```python\na = 1\nb = 2\n```"


def test_a_code_line_of_digits_is_code() -> None:
    html = ("<pre><code class='hljs language-text'><table class='hljs-ln'><tr>"
            "<td class='hljs-ln-numbers'><div class='hljs-ln-n'></div></td><td class='hljs-ln-code'>42</td>"
            "</tr></table></code></pre>")
    assert md(html) == "```text\n42\n```"


# -- links ------------------------------------------------------------------------


def test_empty_links_leave_nothing_but_their_tail() -> None:
    html = ("<p>Go <a href='/a'></a>on <a href='/b'> &nbsp;\u200b</a>now <a href='/c'><span></span></a>"
            "<a href='/d'><img src='/icon.svg'></a>and <a href='/e'>here</a>.</p>")
    assert md(html) == "Go on now and [here](https://example.com/e)."


def test_image_link_keeps_the_image_or_its_alt() -> None:
    html = "<p><a href='/home'><img src='/logo.png' alt='Acme'></a></p>"
    assert md(html) == "[![Acme](https://example.com/logo.png)](https://example.com/home)"
    assert md(html, images="none") == "[Acme](https://example.com/home)"


@pytest.mark.parametrize("href", ["javascript:void(0)", " JavaScript:go()", "#", "", None, "vbscript:x"])
def test_links_to_nowhere_become_text(href: str | None) -> None:
    attribute = "" if href is None else f" href='{href}'"
    assert md(f"<p>Press <a{attribute}>Subscribe</a> now.</p>") == "Press Subscribe now."


def test_fragment_links_are_kept() -> None:
    assert md("<p>See <a href='#install'>Install</a>.</p>") == (
        "See [Install](https://example.com/docs/page.html#install)."
    )


# -- images -----------------------------------------------------------------------

IMAGES = ("<p>A <img src='/chart.png' alt='Sales chart'> B <img src='/photo.jpg'> "
          "C <img data-src='/lazy.png' alt='Lazy'> D <img alt='No address'></p>")


@pytest.mark.parametrize(("mode", "expected"), [
    ("alt", "A ![Sales chart](https://example.com/chart.png) B C "
            "![Lazy](https://example.com/lazy.png) D No address"),
    ("all", "A ![Sales chart](https://example.com/chart.png) B ![](https://example.com/photo.jpg) "
            "C ![Lazy](https://example.com/lazy.png) D No address"),
    ("none", "A B C D No address"),
])
def test_images_mode(mode: str, expected: str) -> None:
    assert md(IMAGES, images=mode) == expected


def test_default_keeps_only_images_with_alt() -> None:
    assert md(IMAGES) == md(IMAGES, images="alt")


def test_unknown_images_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="images must be one of alt, all, none"):
        md(IMAGES, images="some")


# -- whitespace -------------------------------------------------------------------


def test_no_runs_of_blank_lines_or_trailing_spaces_after_the_rewrites() -> None:
    html = ("<p>one   </p><table role='presentation'><tr><td><p> </p><p>two </p></td>"
            "<td>\n\n\n</td></tr></table><div><a href='/x'> </a></div><p>three</p>")
    out = md(html)
    assert out == "one\n\ntwo\n\nthree"


def test_a_link_around_links_gives_way_to_them() -> None:
    html = "<p><a href='/card'><span><a href='/deals'>couches for sale</a></span></a></p>"
    assert md(html) == "[couches for sale](https://example.com/deals)"


def test_a_title_row_across_the_table_goes_before_it() -> None:
    html = ("<table><tr><td colspan='3'><b>Rates in 2024</b></td></tr><tr><td>Rank</td><td>State</td>"
            "<td>Rate</td></tr><tr><td>1</td><td>NY</td><td>$90</td></tr></table>")
    assert md(html) == "**Rates in 2024**\n\n| Rank | State | Rate |\n| --- | --- | --- |\n| 1 | NY | $90 |"


def test_a_group_row_across_the_table_is_not_part_of_the_header() -> None:
    html = ("<table><tr><th>Action</th><th>Command</th></tr><tr><th colspan='2'>Starting a unit</th></tr>"
            "<tr><td>Start</td><td><code>systemctl start</code></td></tr></table>")
    assert md(html) == (
        "| Action | Command |\n| --- | --- |\n| Starting a unit |  |\n| Start | `systemctl start` |"
    )


def test_heading_permalinks_are_dropped_other_marks_kept() -> None:
    html = ("<h2>Usage<a class='headerlink' href='#usage'>¶</a></h2>"
            "<h3 id='api'><a href='#api'>#</a> API</h3><p>See <a href='#usage'>¶</a> above.</p>")
    assert md(html) == "## Usage\n\n### API\n\nSee [¶](https://example.com/docs/page.html#usage) above."


def test_hostile_spans_stay_in_bounded_time() -> None:
    rows = "".join("<tr><td colspan='1000' rowspan='65534'>x</td><td>y</td></tr>" for _ in range(2000))
    started = time.perf_counter()
    assert md(f"<table>{rows}</table>").startswith("| x |")
    assert time.perf_counter() - started < 10  # without the slot bound: minutes


def test_a_table_of_numbered_code_examples_is_not_a_gutter() -> None:
    html = ("<table><tr><th>Step</th><th>Command</th></tr><tr><td>1</td><td><pre>make</pre></td></tr>"
            "<tr><td>2</td><td><pre>make install</pre></td></tr></table>")
    assert md(html) == "| Step | Command |\n| --- | --- |\n| 1 | `make` |\n| 2 | `make install` |"


def test_a_list_in_a_cell_reads_as_a_list_on_one_line() -> None:
    html = ("<table><tr><th>Plan</th><th>Includes</th></tr><tr><td>Pro</td>"
            "<td><ul>\n<li>SSO</li>\n<li>Audit <b>log</b></li>\n<li>SLA</li>\n</ul></td></tr></table>")
    assert md(html) == "| Plan | Includes |\n| --- | --- |\n| Pro | SSO; Audit **log**; SLA |"


def test_an_alt_text_that_repeats_the_text_beside_it_is_not_written_twice() -> None:
    card = ("<div><a href='/p/1'><img src='/i/1.jpg' alt='Ridge 2 trail shoe'></a>"
            "<a href='/p/1'>Ridge 2 trail shoe</a> $120 <img src='/i/badge.png' alt='Vegan'></div>")
    assert md(card) == ("[Ridge 2 trail shoe](https://example.com/p/1) $120 "
                        "![Vegan](https://example.com/i/badge.png)")
    assert md(card, images="all").startswith("[![Ridge 2 trail shoe](https://example.com/i/1.jpg)]")
    # whole words only: "Ridge" is not a repeat of "Ridge 2 trail shoe", nor "Rid" of "Ridge"
    assert "![Rid]" in md("<p>Ridge is here. <img src='/r.png' alt='Rid'></p>")
