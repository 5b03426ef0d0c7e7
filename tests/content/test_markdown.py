"""Tests for statecrawl.content.markdown: exact Markdown for each HTML construct a crawl meets.

The first tests convert small fragments (no chrome, so main-content
detection keeps them whole); the main-content tests use full pages with
navigation, sidebars, comments and a cookie banner; the bad-input tests
check that every page gives a string, in bounded time.
"""

from __future__ import annotations

import logging
import time

import pytest

import statecrawl.content.markdown
from statecrawl.content.extract import parse_html
from statecrawl.content.markdown import _tidy, strip_boilerplate, to_markdown

URL = "https://example.com/blog/post.html"


def test_headings_and_inline_formatting() -> None:
    html = (
        "<h1>Title</h1><h2>Section</h2><h3>Sub <em>section</em></h3>"
        "<p>Some <strong>bold</strong>, <em>italic</em> and <code>code</code>.</p>"
    )
    assert to_markdown(html, URL) == (
        "# Title\n\n## Section\n\n### Sub *section*\n\nSome **bold**, *italic* and `code`."
    )


def test_nested_lists() -> None:
    html = (
        "<ul><li>one<ul><li>one.a</li><li>one.b<ol><li>deep</li></ol></li></ul></li>"
        "<li>two</li></ul><ol start='3'><li>three</li><li>four</li></ol>"
    )
    assert to_markdown(html, URL) == (
        "- one\n  - one.a\n  - one.b\n    1. deep\n- two\n\n3. three\n4. four"
    )


def test_table() -> None:
    html = (
        "<table><thead><tr><th>Name</th><th>Age</th></tr></thead><tbody>"
        "<tr><td>Ann</td><td>31</td></tr><tr><td>Bob &amp; Co</td><td>42</td></tr>"
        "</tbody></table>"
    )
    assert to_markdown(html, URL) == (
        "| Name | Age |\n| --- | --- |\n| Ann | 31 |\n| Bob & Co | 42 |"
    )


def test_fenced_code_keeps_language_and_blank_lines() -> None:
    html = (
        "<p>Run:</p><pre><code class='language-python'>def f():\n\n\n    return 1\n</code></pre>"
        "<pre>plain</pre>"
    )
    assert to_markdown(html, URL) == (
        "Run:\n\n```python\ndef f():\n\n\n    return 1\n```\n\n```\nplain\n```"
    )


def test_relative_links_and_images_made_absolute() -> None:
    html = (
        "<p><a href='other.html'>rel</a> <a href='/root\n  '>root</a> <a href='../up?q=1'>up</a> "
        "<a href='//cdn.example.org/x'>proto</a> <a href='#frag'>frag</a> "
        "<a href='mailto:a@b.c'>mail</a> <a href='https://other.org/abs'>abs</a> "
        "<img src='img/a.png' alt='A'></p>"
    )
    assert to_markdown(html, URL) == (
        "[rel](https://example.com/blog/other.html) [root](https://example.com/root) "
        "[up](https://example.com/up?q=1) [proto](https://cdn.example.org/x) "
        "[frag](https://example.com/blog/post.html#frag) [mail](mailto:a@b.c) "
        "[abs](https://other.org/abs) ![A](https://example.com/blog/img/a.png)"
    )


def test_base_href_is_respected() -> None:
    html = (
        "<html><head><base href='/docs/v2/'></head><body>"
        "<p><a href=' intro.html '>intro</a> <img src='../logo.png' alt='logo'></p></body></html>"
    )
    assert to_markdown(html, URL) == (
        "[intro](https://example.com/docs/v2/intro.html) ![logo](https://example.com/docs/logo.png)"
    )


def test_lazy_loaded_and_srcset_images_made_absolute() -> None:
    html = (
        "<img data-src='lazy.png' alt='lazy'> <img srcset='small.png 1x, big.png 2x' alt='set'> "
        "<img src='data:image/gif;base64,R0lGOD' data-src='/real.png' alt='placeholder'>"
    )
    assert to_markdown(html, URL) == (
        "![lazy](https://example.com/blog/lazy.png) ![set](https://example.com/blog/big.png) "
        "![placeholder](https://example.com/real.png)"
    )


def test_unjoinable_base_href_falls_back_to_page_url() -> None:
    html = "<head><base href='http://[::1'></head><body><a href='p'>p</a></body>"
    assert to_markdown(html, URL) == "[p](https://example.com/blog/p)"


def test_control_character_from_entity_in_link_is_percent_encoded() -> None:
    html = "<p><a href='https://x.org/?t=a&#8;b'>tweet</a> <a href='rel&#8;x'>r</a></p>"
    assert to_markdown(html, URL) == (
        "[tweet](https://x.org/?t=a%08b) [r](https://example.com/blog/rel%08x)"
    )


def test_entities_are_decoded() -> None:
    html = "<p>Fish &amp; chips&nbsp;cost &lt;5&gt; &eacute;&#8364;</p>"
    assert to_markdown(html, URL) == "Fish & chips cost <5> é€"


@pytest.mark.parametrize("only_main_content", [True, False])
def test_boilerplate_removed_content_and_tail_text_kept(only_main_content: bool) -> None:
    html = (
        "<header><a href='/'>Site</a></header><nav><a href='/a'>A</a></nav>"
        "<div role='Navigation '>Menu</div><main><article><header><h1>Kept</h1></header>"
        "<p>Text<script>var x = 1;</script> after.</p><style>p{}</style>"
        "<form><input name=q><button>Go</button></form><aside>Related</aside>"
        "<iframe src='/ad'></iframe><noscript>enable js</noscript><template><p>tpl</p></template>"
        "<svg><text>svg</text></svg></article></main>"
        "<footer>Copyright</footer><div role='contentinfo'>Legal</div><div role='banner'>Logo</div>"
    )
    assert to_markdown(html, URL, only_main_content=only_main_content) == "# Kept\n\nText after."


def test_strip_boilerplate_never_removes_the_root() -> None:
    root = parse_html("<body role='navigation'><nav>x</nav><p>y</p></body>")
    assert root is not None
    body = root.find("body")
    strip_boilerplate(body)
    assert [child.tag for child in body] == ["p"]


def test_blank_lines_collapsed_and_no_trailing_whitespace() -> None:
    html = "<p>a</p><p>&nbsp;</p><br><br><br><div>  </div><p>b   </p><p>c<br>d</p>"
    assert to_markdown(html, URL) == "a\n\nb\n\nc\\\nd"


def test_tidy_leaves_fenced_code_alone() -> None:
    raw = "\n\nx  \n\n\n\n  ```\n  a  \n\n\n  b\n  ```\n\n\n~~~~\n\n\n~~~\n\n\n~~~~\n\n\ny \n"
    assert _tidy(raw) == "x\n\n  ```\n  a  \n\n\n  b\n  ```\n\n~~~~\n\n\n~~~\n\n\n~~~~\n\ny"


def test_fragment_without_body_and_head_only_document() -> None:
    assert to_markdown("<p>just a fragment</p>", URL) == "just a fragment"
    assert to_markdown("<html><head><title>T</title></head></html>", URL) == ""


def test_xml_declaration_in_str_is_accepted() -> None:
    html = "<?xml version='1.0' encoding='iso-8859-1'?><html><body><p>caf\u00e9</p></body></html>"
    assert to_markdown(html, URL) == "caf\u00e9"


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("", ""),
        ("   \n\t", ""),
        ("<script>alert(1)</script>", ""),
        ("<script>alert(1)</script><style>p{}</style>", ""),
        ("<div><p>a<div>b</span></p>", "a\n\nb"),
        ("\x00\x01 garbage <<<>>> &&&", "garbage <<<>>> &&&"),
        ("\x89PNG\r\n\x1a\n\x00\x00", "\x89PNG"),
        ("\ud800 lone surrogate", "? lone surrogate"),
        ("<" * 1000, "<" * 1000),
    ],
)
def test_bad_input_returns_a_string(html: str, expected: str) -> None:
    assert to_markdown(html, URL) == expected


def test_very_deep_nesting_returns_a_string() -> None:
    assert isinstance(to_markdown("<div>" * 5000 + "deep" + "</div>" * 5000, URL), str)


@pytest.mark.parametrize("url", ["http://[::1", "", "not a url"])
def test_unusable_page_url_leaves_links_relative(url: str) -> None:
    assert to_markdown("<a href='/p'>ok</a> <a href='https://o.org/'>abs</a>", url) == (
        "[ok](/p) [abs](https://o.org/)"
    )


def test_converter_failure_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(html: str, options: object) -> object:
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(statecrawl.content.markdown.html_to_markdown, "convert", boom)
    with caplog.at_level(logging.WARNING, logger="statecrawl.content.markdown"):
        assert to_markdown("<p>x</p>", URL) == ""
    assert f"Markdown conversion failed for {URL}" in caplog.text


def test_code_language_from_class_prefixes() -> None:
    html = (
        "<pre><code class='lang-js'>let a = 1;</code></pre>"
        "<pre class='language-rust'><code>fn main() {}</code></pre>"
        "<pre><code class='highlight'>no language</code></pre>"
    )
    assert to_markdown(html, URL) == (
        "```js\nlet a = 1;\n```\n\n```rust\nfn main() {}\n```\n\n```\nno language\n```"
    )


def test_images_titles_and_decorative_images() -> None:
    html = (
        "<p><img src='a.png' alt='A chart' title='tooltip'> "
        "<a href='/x' title='also a tooltip'>x</a> <img src='spacer.gif' alt=''> "
        "<img src='pixel.gif' width='1' height='1'> <img src='/b.jpg'></p>"
    )
    assert to_markdown(html, URL, images="all") == (
        "![A chart](https://example.com/blog/a.png) [x](https://example.com/x) "
        "![](https://example.com/b.jpg)"
    )


# -- main content ---------------------------------------------------------------

ARTICLE_URL = "https://example.com/news/2024/tides.html"
ARTICLE = """<!DOCTYPE html>
<html lang="en">
<head><title>Why the tides turn</title><base href="https://example.com/news/">
<script>var tracking = 1;</script></head>
<body>
<div id="cookie-banner" class="cookie-consent"><p>We use cookies to give you the best
experience on our website. <a href="/privacy">Read our privacy policy</a>.</p>
<button>Accept all</button></div>
<header class="site-header"><a href="/"><img src="/logo.png" alt="Example News"></a>
  <nav><ul><li><a href="/world">World</a></li><li><a href="/science">Science</a></li></ul></nav>
</header>
<div class="layout">
  <main>
    <article>
      <h1>Why the tides turn</h1>
      <p class="byline">By Ann Author, 3 May 2024</p>
      <p>The Moon pulls on the oceans, and the oceans answer twice a day. Where the pull is
      strongest, the water heaps up into a bulge; on the far side of the Earth, a second bulge forms.</p>
      <p>As the Earth turns under the two bulges, every coast passes through high and low water,
      roughly every twelve hours and twenty-five minutes, which is why the tide is a little later
      each day.</p>
      <h2>Spring and neap tides</h2>
      <p>When the Sun and the Moon line up, at new and full moon, their pulls add up and the
      <a href="tides/spring.html">spring tides</a> are large. At the quarters, they work against
      each other, and the neap tides are small.</p>
      <figure><img src="img/chart.png" alt="Tide chart">
      <figcaption>High and low water at Brest, May 2024.</figcaption></figure>
      <ul><li>Spring tides: about every two weeks.</li><li>Neap tides: in between.</li></ul>
      <div class="share-buttons"><a href="https://twitter.com/share">Twitter</a>
      <a href="https://facebook.com/share">Facebook</a> <a href="mailto:?subject=Tides">Email</a></div>
    </article>
    <section id="comments" class="comments">
      <h3>2 comments</h3>
      <div class="comment"><p>Great article, thanks for writing it, I never understood why
      the tide was later every day.</p></div>
      <div class="comment"><p>What about the Bay of Fundy, are its tides the largest in the world?</p></div>
    </section>
  </main>
  <aside class="sidebar"><h3>Most read</h3><ul>
    <li><a href="/storm">Storm warning issued for the whole coast tonight</a></li>
    <li><a href="/harbour">The harbour reopens after three months of works</a></li></ul>
  </aside>
</div>
<footer><p>&copy; 2024 Example News. All rights reserved.</p><a href="/contact">Contact us</a></footer>
</body>
</html>"""

ARTICLE_MARKDOWN = (
    "# Why the tides turn\n\n"
    "The Moon pulls on the oceans, and the oceans answer twice a day. Where the pull is\n"
    "strongest, the water heaps up into a bulge; on the far side of the Earth, a second bulge forms.\n\n"
    "As the Earth turns under the two bulges, every coast passes through high and low water,\n"
    "roughly every twelve hours and twenty-five minutes, which is why the tide is a little later\n"
    "each day.\n\n"
    "## Spring and neap tides\n\n"
    "When the Sun and the Moon line up, at new and full moon, their pulls add up and the "
    "[spring tides](https://example.com/news/tides/spring.html) are large. "
    "At the quarters, they work against\n"
    "each other, and the neap tides are small.\n\n"
    "![Tide chart](https://example.com/news/img/chart.png)\n\n"
    "- Spring tides: about every two weeks.\n"
    "- Neap tides: in between."
)


def test_main_content_is_the_article_alone() -> None:
    assert to_markdown(ARTICLE, ARTICLE_URL) == ARTICLE_MARKDOWN


def test_whole_page_keeps_what_main_content_drops() -> None:
    markdown = to_markdown(ARTICLE, ARTICLE_URL, only_main_content=False)
    assert markdown.startswith(
        "We use cookies to give you the best\nexperience on our website. "
        "[Read our privacy policy](https://example.com/privacy).\n\nAccept all\n\n# Why the tides turn\n\n"
        "By Ann Author, 3 May 2024\n\n"
    )
    for kept in ("*High and low water at Brest, May 2024.*", "[Twitter](https://twitter.com/share)",
                 "### 2 comments", "Bay of Fundy"):  # fmt: skip
        assert kept in markdown
    # The landmarks strip_boilerplate removes in both modes.
    for dropped in ("Most read", "World", "All rights reserved", "tracking"):
        assert dropped not in markdown


def test_main_content_keeps_every_post_of_a_thread() -> None:
    html = """<html><body>
    <header><a href="/">Tide Forum</a> <a href="/login">Log in</a></header>
    <nav class="breadcrumbs"><a href="/">Forums</a> &rsaquo; <a href="/f/sailing">Sailing</a></nav>
    <main><h1>Anchoring in a strong tidal stream?</h1>
      <div class="post"><div class="author"><a href="/u/marie">marie</a></div><div class="message">
        <p>We sail to Alderney next month, where the stream runs at seven knots. How much chain
        would you put out, and is a Bruce anchor enough?</p></div></div>
      <div class="post"><div class="author"><a href="/u/tom">tom</a></div><div class="message">
        <p>Five times the depth at high water, at least, and set the anchor at slack water.</p></div></div>
      <div class="post"><div class="author"><a href="/u/ines">ines</a></div><div class="message">
        <p>Braye harbour is sheltered from the stream, so you will not need much: mind the swell.</p>
      </div></div>
    </main>
    <footer><a href="/rules">Forum rules</a> &middot; <a href="/privacy">Privacy</a></footer>
    </body></html>"""
    assert to_markdown(html, "https://forum.example.org/t/42") == (
        "# Anchoring in a strong tidal stream?\n\n"
        "[marie](https://forum.example.org/u/marie)\n\n"
        "We sail to Alderney next month, where the stream runs at seven knots. How much chain\n"
        "would you put out, and is a Bruce anchor enough?\n\n"
        "[tom](https://forum.example.org/u/tom)\n\n"
        "Five times the depth at high water, at least, and set the anchor at slack water.\n\n"
        "[ines](https://forum.example.org/u/ines)\n\n"
        "Braye harbour is sheltered from the stream, so you will not need much: mind the swell."
    )


def test_main_content_of_a_page_without_prose_is_its_main() -> None:
    html = """<html><body>
    <header class="site-header"><a href="/">Shoe Shop</a>
      <form action="/search"><input name="q"><button>Search</button></form></header>
    <nav><a href="/men">Men</a> <a href="/women">Women</a></nav>
    <main><h1>Trail running shoes</h1><ul class="product-grid">
      <li><a href="/p/1"><img src="/i/1.jpg" alt="Ridge 2"> Ridge 2</a> <span class="price">$120</span></li>
      <li><a href="/p/2"><img src="/i/2.jpg" alt="Scree Pro"> Scree Pro</a>
        <span class="price">$150</span></li>
    </ul></main>
    <footer><p>Free returns within 30 days of delivery.</p><a href="/help">Help</a></footer>
    </body></html>"""
    assert to_markdown(html, "https://shop.example.com/trail") == (
        "# Trail running shoes\n\n"  # the images' alt texts repeat the names: no words of their own
        "- [Ridge 2](https://shop.example.com/p/1) $120\n"
        "- [Scree Pro](https://shop.example.com/p/2) $150"
    )


def test_hidden_elements_and_dialogs_are_not_content() -> None:
    html = (
        "<div role='dialog' aria-modal='true'>"
        "<p>Subscribe to our newsletter for weekly tide tables!</p></div>"
        "<p>Visible paragraph about the tides, long enough to be a paragraph.</p>"
        "<p hidden>Hidden paragraph that a browser would never show to anyone.</p>"
        "<p style='display: none'>Another paragraph hidden by its inline style, never shown.</p>"
        "<div aria-hidden='true'>Screen readers and eyes both skip this text.</div>"
    )
    assert to_markdown(html, URL) == "Visible paragraph about the tides, long enough to be a paragraph."


def test_include_tags_keep_only_matching_elements_in_order() -> None:
    markdown = to_markdown(ARTICLE, ARTICLE_URL, include_tags=["h2", "article h1", "figure", "figure img"])
    assert markdown == (
        "# Why the tides turn\n\n## Spring and neap tides\n\n"
        "![Tide chart](https://example.com/news/img/chart.png)\n\n*High and low water at Brest, May 2024.*"
    )


def test_exclude_tags_remove_matching_elements() -> None:
    markdown = to_markdown(ARTICLE, ARTICLE_URL, exclude_tags=["h2", "ul", "FIGURE"])
    assert markdown == ARTICLE_MARKDOWN.replace("## Spring and neap tides\n\n", "").replace(
        "\n\n![Tide chart](https://example.com/news/img/chart.png)\n\n"
        "- Spring tides: about every two weeks.\n- Neap tides: in between.", ""
    )
    whole = to_markdown(
        ARTICLE, ARTICLE_URL, only_main_content=False, exclude_tags=["#cookie-banner", ".comments"]
    )
    assert whole.startswith("# Why the tides turn\n\nBy Ann Author") and "comments" not in whole


def test_exclude_applies_within_include() -> None:
    html = "<div class='a'><p>one</p><p class='ad'>buy</p></div><div class='b'><p>two</p></div><p>three</p>"
    assert to_markdown(html, URL, include_tags=[".a", ".b"], exclude_tags=[".ad"]) == "one\n\ntwo"
    assert to_markdown(html, URL, include_tags=[".nothing"]) == ""


def test_invalid_selectors_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    html = "<h1>Title</h1><p>Body</p>"
    with caplog.at_level(logging.WARNING, logger="statecrawl.content.markdown"):
        assert to_markdown(html, URL, include_tags=["div[", "h1"]) == "# Title"
        assert to_markdown(html, URL, exclude_tags=["p:nth-child(", "::"]) == "# Title\n\nBody"
    assert "Ignoring invalid CSS selector 'div['" in caplog.text


# -- bad input ---------------------------------------------------------------------


def test_document_without_body_or_text() -> None:
    assert to_markdown("<html><head><script>x()</script><style>p{}</style></head></html>", URL) == ""
    script_only = "<script>document.write('<p>late</p>')</script><noscript>Enable JS</noscript>"
    assert to_markdown(script_only, URL) == ""
    assert to_markdown("<frameset><frame src='a.html'></frameset>", URL) == ""


def test_broken_nesting_keeps_the_text() -> None:
    html = "<p>one <b>two <i>three</b> four</i> five<table><td>cell<p>in cell</table><li>item"
    # libxml2 repairs the overlap by closing <i> with <b> (a browser would reopen it).
    # A one-cell table is a box, not data: its content comes out as text.
    assert to_markdown(html, URL) == "one **two *three*** four five\n\ncell\n\nin cell\n\n- item"


def test_text_decoded_with_errors_and_declared_charset() -> None:
    latin1 = "<p>caf\xe9 cr\xe8me br\xfbl\xe9e</p>".encode("latin-1")
    assert to_markdown(latin1.decode("utf-8", errors="replace"), URL) == (
        "caf\ufffd cr\ufffdme br\ufffdl\ufffde"
    )
    # The text is already decoded: a <meta charset> must not decode it again.
    declared = (
        "<html><head><meta charset='iso-8859-1'></head><body><p>caf\xe9 \u20ac \u6f22</p></body></html>"
    )
    assert to_markdown(declared, URL) == "caf\xe9 \u20ac \u6f22"


def test_ten_megabyte_page_in_bounded_time() -> None:
    paragraph = "<p>The tide rises and falls twice a day, pulled by the Moon, and sailors sail by it.</p>\n"
    html = (
        "<html><body><nav><a href='/'>Home</a></nav><article>"
        + paragraph * (10_000_000 // len(paragraph))
        + "</article><footer>Contact</footer></body></html>"
    )
    started = time.perf_counter()
    markdown = to_markdown(html, URL)
    assert time.perf_counter() - started < 10  # catches blow-ups, not a benchmark
    assert markdown.startswith("The tide rises") and markdown.count("\n\n") == html.count("<p>") - 1
    assert "Home" not in markdown and "Contact" not in markdown


@pytest.mark.parametrize("only_main_content", [True, False])
def test_deeply_nested_tables_keep_their_text(only_main_content: bool) -> None:
    html = "<table><tr><td>" * 500 + "deep" + "</td></tr></table>" * 500
    started = time.perf_counter()
    assert to_markdown(html, URL, only_main_content=only_main_content) == "deep"  # layout tables
    assert time.perf_counter() - started < 10


def test_nesting_deeper_than_the_converter_limit_is_flattened() -> None:
    html = "<div>" * 1500 + "<p>" + "deep text, " * 5 + "</p>" + "</div>" * 1500
    assert to_markdown(html, URL) == "deep text, " * 4 + "deep text,"


def test_main_content_html_is_the_cleaned_content_with_absolute_links() -> None:
    html = (
        "<html><head><base href='https://cdn.example.com/'></head><body>"
        "<nav><a href='/home'>Home</a></nav><article><h1>Title</h1><p>"
        + "A sentence of the article, long enough to be its content. " * 8
        + "<a href='more.html'>more</a></p><script>track()</script></article>"
        "<footer>Footer</footer></body></html>"
    )
    out = statecrawl.content.markdown.main_content_html(html, URL)
    assert out.startswith("<article><h1>Title</h1>") and out.endswith("</article>")
    assert 'href="https://cdn.example.com/more.html"' in out
    assert "Home" not in out and "Footer" not in out and "track()" not in out
    assert statecrawl.content.markdown.main_content_html("", URL) == ""
