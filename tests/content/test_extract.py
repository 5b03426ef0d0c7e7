"""Tests for statecrawl.content.extract: the never-failing parse and page metadata with its fallbacks."""

from __future__ import annotations

import logging

import pytest

import statecrawl.content.extract
from statecrawl.content.extract import normalize_space, page_metadata, parse_html

URL = "https://example.com/page"
NOTHING = {"title": None, "description": None, "language": None, "canonical": None,
           "open_graph": {}, "twitter": {}, "published": None, "author": None}


def basic(html: str) -> dict[str, object]:
    """Title, description and language only."""
    meta = page_metadata(html, URL)
    return {k: meta[k] for k in ("title", "description", "language")}  # type: ignore[literal-required]


def test_primary_sources_whitespace_normalised() -> None:
    html = """<html lang=" en-GB "><head><title>  My
        page&nbsp;title </title>
        <meta name="description" content="  A   short
        description. ">
        <meta property="og:title" content="OG title">
        <meta property="og:description" content="OG description">
        </head><body><h1>Heading</h1></body></html>"""
    assert basic(html) == {
        "title": "My page title",
        "description": "A short description.",
        "language": "en-GB",
    }


def test_fallbacks_to_open_graph_and_content_language() -> None:
    html = """<html><head><title> </title>
        <meta property="og:title" content="OG &amp; title">
        <meta property="og:description" content="OG description">
        <meta http-equiv="Content-Language" content="de-AT, en">
        </head><body><h1>Heading</h1></body></html>"""
    assert basic(html) == {
        "title": "OG & title",
        "description": "OG description",
        "language": "de-AT",
    }


def test_title_falls_back_to_first_non_empty_h1() -> None:
    html = "<body><h1> </h1><h1>First <em>real</em>\n heading</h1><h1>Second</h1></body>"
    assert basic(html) == {
        "title": "First real heading",
        "description": None,
        "language": None,
    }


def test_meta_keys_are_case_insensitive_and_og_in_name_is_accepted() -> None:
    html = """<head><META NAME="Description" CONTENT="Upper">
        <meta name="og:title" content="Named OG"></head>"""
    assert basic(html) == {"title": "Named OG", "description": "Upper", "language": None}


def test_empty_meta_content_is_skipped_and_svg_title_ignored() -> None:
    html = """<head><meta name="description" content="  ">
        <meta name="description" content="Second"></head>
        <body><svg><title>icon</title></svg><h1>Real</h1></body>"""
    assert basic(html) == {"title": "Real", "description": "Second", "language": None}


def test_xml_lang_is_read() -> None:
    html = '<html xml:lang="fr"><body><p>x</p></body></html>'
    assert page_metadata(html, URL)["language"] == "fr"


@pytest.mark.parametrize(
    "html",
    ["", "   ", "\x00\x01\xff garbage <<<>>>", "<script>x()</script>", "<p>no metadata</p>", "\ud800"],
)
def test_pages_without_metadata_give_nones(html: str) -> None:
    assert page_metadata(html, URL) == NOTHING


def test_failure_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object) -> object:
        raise RuntimeError("metadata exploded")

    monkeypatch.setattr(statecrawl.content.extract, "_metadata", boom)
    with caplog.at_level(logging.WARNING, logger="statecrawl.content.extract"):
        assert page_metadata("<title>x</title>", URL) == NOTHING
    assert f"Metadata extraction failed for {URL}" in caplog.text


def test_parse_html_returns_none_for_nothing_and_a_tree_otherwise() -> None:
    assert parse_html("") is None
    assert parse_html(" \n ") is None
    root = parse_html("<?xml version='1.0' encoding='latin-1'?><p>caf\u00e9\x00</p>")
    assert root is not None
    assert root.tag == "html"
    assert root.findtext("body/p") == "caf\u00e9"


def test_normalize_space() -> None:
    assert normalize_space(None) is None
    assert normalize_space(" \u00a0\n") is None
    assert normalize_space(" a \u00a0 b\n\tc ") == "a b c"


def test_canonical_open_graph_twitter_published_author() -> None:
    html = """<html><head><base href="/docs/"><title>T</title>
    <link rel="Canonical alternate" href="guide.html">
    <meta property="og:title" content="OG title"><meta name="og:image" content="/i.png">
    <meta name="twitter:card" content="summary"><meta property="twitter:site" content="@x">
    <meta property="article:published_time" content="2024-01-02T03:04:05Z">
    <meta name="author" content="  Ann  Lee ">
    </head><body></body></html>"""
    meta = page_metadata(html, "https://example.com/a/b.html")
    assert meta["canonical"] == "https://example.com/docs/guide.html"
    assert meta["open_graph"] == {"title": "OG title", "image": "/i.png"}
    assert meta["twitter"] == {"card": "summary", "site": "@x"}
    assert (meta["published"], meta["author"]) == ("2024-01-02T03:04:05Z", "Ann Lee")


def test_published_and_author_from_json_ld_and_time() -> None:
    html = """<script type="application/ld+json">{"@context": "https://schema.org",
      "@graph": [{"@type": "NewsArticle", "datePublished": "2023-05-06",
                  "author": [{"@type": "Person", "name": "Bo"}, {"name": "Cy"}]}]}</script>
    <script type="application/ld+json">{not json</script><p>x</p>"""
    assert (page_metadata(html, URL)["published"], page_metadata(html, URL)["author"]) == (
        "2023-05-06", "Bo, Cy")
    html = '<article><time pubdate datetime="2022-02-02T10:00">Feb 2</time></article>'
    assert page_metadata(html, URL)["published"] == "2022-02-02T10:00"
