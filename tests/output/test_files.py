"""Where a page's Markdown file goes, and what an item that cannot be stored becomes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from statecrawl.frontier.store import error_item_data
from statecrawl.output import markdown_document, markdown_relpath, write_markdown


@pytest.mark.parametrize("url, path", [
    ("http://example.com/", "markdown/example.com/index.md"),
    ("http://example.com/docs/", "markdown/example.com/docs/index.md"),
    ("http://example.com/a/b.html", "markdown/example.com/a/b.md"),
    ("http://example.com:8080/x", "markdown/example.com_8080/x.md"),
    ("http://example.com/../../etc/passwd", "markdown/example.com/_/_/etc/passwd.md"),
    ("http://example.com/v1.2", "markdown/example.com/v1.2.md"),
    ("http://example.com/v1.3", "markdown/example.com/v1.3.md"),
    ("http://example.com/a%2F..%2Fb", "markdown/example.com/a_2F.._2Fb.md"),
])
def test_paths_stay_inside_the_output_folder(url: str, path: str) -> None:
    rel = markdown_relpath(url)
    assert rel == PurePosixPath(path)
    assert ".." not in rel.parts and not rel.is_absolute()


def test_a_query_adds_a_hash_so_pages_do_not_overwrite_each_other() -> None:
    one, two = markdown_relpath("http://e.com/p?page=1"), markdown_relpath("http://e.com/p?page=2")
    assert one != two and one.parent == two.parent


def test_a_long_segment_is_cut_and_kept_unique() -> None:
    a = markdown_relpath("http://e.com/" + "a" * 300)
    b = markdown_relpath("http://e.com/" + "a" * 299 + "b")
    assert a != b and all(len(part) <= 120 for part in a.parts)


def test_the_file_has_front_matter_and_only_items_with_markdown_get_one(tmp_path: Path) -> None:
    item = {"url": "http://e.com/x", "title": 'Say "hi"', "fetched_at": "2026-01-01T00:00:00+00:00",
            "markdown": "# X\n\ntext\n\n\n"}
    assert markdown_document(item) == (
        '---\nurl: "http://e.com/x"\ntitle: "Say \\"hi\\""\nfetched_at: "2026-01-01T00:00:00+00:00"\n'
        "---\n\n# X\n\ntext\n")
    assert write_markdown(tmp_path, item) is True
    assert (tmp_path / "markdown/e.com/x.md").read_text().endswith("# X\n\ntext\n")
    assert write_markdown(tmp_path, {"url": "http://e.com/y", "markdown": ""}) is False
    assert not (tmp_path / "markdown/e.com/y.md").exists()


def test_an_error_item_keeps_the_pages_identity_and_drops_its_content() -> None:
    data = {"url": "http://e.com/big", "status": 200, "title": "Big", "markdown": "x" * 10_000,
            "raw_html": "<p>" * 1000, "links": [{"url": "http://e.com/", "text": "home"}],
            "final_url": "http://e.com/" + "y" * 9000}
    out = error_item_data(data, "ItemTooLarge", "too big")
    assert out == {"url": "http://e.com/big", "status": 200, "title": "Big",
                   "error": {"type": "ItemTooLarge", "message": "too big"}}
