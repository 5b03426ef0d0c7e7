"""Tests for statecrawl.markdown: exact Markdown for each HTML construct a crawl meets."""

from __future__ import annotations

import logging

import pytest

import statecrawl.markdown
from statecrawl.extract import parse_html
from statecrawl.markdown import _tidy, strip_boilerplate, to_markdown

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


def test_boilerplate_removed_content_and_tail_text_kept() -> None:
    html = (
        "<header><a href='/'>Site</a></header><nav><a href='/a'>A</a></nav>"
        "<div role='Navigation '>Menu</div><main><article><header><h1>Kept</h1></header>"
        "<p>Text<script>var x = 1;</script> after.</p><style>p{}</style>"
        "<form><input name=q><button>Go</button></form><aside>Related</aside>"
        "<iframe src='/ad'></iframe><noscript>enable js</noscript><template><p>tpl</p></template>"
        "<svg><text>svg</text></svg></article></main>"
        "<footer>Copyright</footer><div role='contentinfo'>Legal</div><div role='banner'>Logo</div>"
    )
    assert to_markdown(html, URL) == "# Kept\n\nText after."


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

    monkeypatch.setattr(statecrawl.markdown.html_to_markdown, "convert", boom)
    with caplog.at_level(logging.WARNING, logger="statecrawl.markdown"):
        assert to_markdown("<p>x</p>", URL) == ""
    assert f"Markdown conversion failed for {URL}" in caplog.text
