"""Main-content extraction quality and speed of to_markdown, against trafilatura, in one run.

    .venv/bin/python bench/markdown.py [--limit N] [--systems a,b] [--data DIR] [--scorer FILE]

Systems, each scored by the shared scorer (``../shared/bench/extraction_score.py``:
scrapinghub's 4-gram shingle F1 over 181 news articles, WCXB's word F1 over
1,497 dev pages of 7 page types):

* ``statecrawl``      ``to_markdown(html, url)``: main content, as Markdown
* ``statecrawl-text`` the same Markdown with link and image targets cut
  (``[text](url)`` -> ``[text]``): the scorer counts the words of every URL
  as page text, which costs Markdown ~0.08 F1 against plain-text output;
  this row compares the *extraction* with trafilatura's text fairly
  (scored from the ``statecrawl`` run's output, so it has no time of its own)
* ``whole-page``      ``to_markdown(html, url, only_main_content=False)``:
  html-to-markdown on the whole ``<body>`` minus scripts and landmarks
* ``trafilatura``     ``trafilatura.extract(html, url=url)``, plain text
  (skipped, with a message, when trafilatura is not installed:
  ``pip install -e '.[bench]'``)

ms/page is the scorer's: wall-clock time in the extractor only, one page
after another on one core. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCORER = ROOT.parent / "shared" / "bench" / "extraction_score.py"
SYSTEMS = ("statecrawl", "statecrawl-text", "whole-page", "trafilatura")
WCXB_TYPES = ("article", "collection", "documentation", "forum", "listing", "product", "service")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")

Extractor = Callable[[str, str], str]


def load_scorer(path: Path, data: Path | None) -> ModuleType:
    """Import extraction_score.py from its path; point it at ``data`` if given."""
    if not path.is_file():
        raise SystemExit(f"scorer not found: {path} (use --scorer)")
    spec = importlib.util.spec_from_file_location("extraction_score", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if data is not None:
        module.DATA = data  # type: ignore[attr-defined]
    return module


def extractors(names: list[str]) -> dict[str, Extractor | None]:
    """The extractor of each system, ``None`` for one that cannot run here."""
    sys.path.insert(0, str(ROOT))
    from statecrawl.content.markdown import to_markdown

    seen: dict[int, str] = {}  # statecrawl's output by page, for the text view

    def statecrawl(html: str, url: str) -> str:
        seen[hash(html)] = markdown = to_markdown(html, url)
        return markdown

    def statecrawl_text(html: str, url: str) -> str:
        markdown = seen.get(hash(html))
        return _LINK_TARGET.sub("]", to_markdown(html, url) if markdown is None else markdown)

    def whole_page(html: str, url: str) -> str:
        return to_markdown(html, url, only_main_content=False)

    found: dict[str, Extractor | None] = {
        "statecrawl": statecrawl, "statecrawl-text": statecrawl_text, "whole-page": whole_page,
    }  # fmt: skip
    if "trafilatura" in names:
        try:
            import trafilatura
        except ImportError:
            print("trafilatura is not installed: skipping it (pip install -e '.[bench]')", flush=True)
            found["trafilatura"] = None
        else:
            for noisy in ("trafilatura", "htmldate", "courlan"):
                logging.getLogger(noisy).setLevel(logging.CRITICAL)

            def traf(html: str, url: str) -> str:
                return trafilatura.extract(html, url=url) or ""

            found["trafilatura"] = traf
    return {name: found[name] for name in names}


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Print the two tables: per set, and WCXB F1 per page type."""
    sets = [s for s in ("scrapinghub", "wcxb-dev") if any(s in r for r in results.values())]
    pages = {s: next(r[s]["pages"] for r in results.values() if s in r) for s in sets}
    width = max(len(name) for name in results) + 2
    head = "".join(f"{f'{s} ({pages[s]} pages)':<31}" for s in sets)
    print(f"\n{'':<{width}}{head}")
    print(f"{'system':<{width}}" + "F1     P      R      ms/page  " * len(sets))
    for name, per_set in results.items():
        row = ""
        for s in sets:
            r = per_set.get(s, {})
            ms = None if name == "statecrawl-text" else r.get("ms_per_page")
            row += (f"{_cell(r.get('f1'))}  {_cell(r.get('precision'))}  {_cell(r.get('recall'))}"
                    f"  {_cell(ms, 2):>7}  ")
        print(f"{name:<{width}}{row}")
    if "wcxb-dev" not in sets:
        return
    print(f"\nWCXB dev F1 by page type\n{'system':<{width}}" + "".join(f"{t:<15}" for t in WCXB_TYPES))
    for name, per_set in results.items():
        by_type = per_set.get("wcxb-dev", {}).get("f1_by_type", {})
        print(f"{name:<{width}}" + "".join(f"{_cell(by_type.get(t)):<15}" for t in WCXB_TYPES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="pages per set (default: all)")
    parser.add_argument("--set", choices=("scrapinghub", "wcxb", "both"), default="both")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of: %(default)s")
    parser.add_argument("--scorer", type=Path, default=SCORER,
                        help="extraction_score.py (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help="benchmark data directory (default: the scorer's ../benchdata)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    if unknown := set(names) - set(SYSTEMS):
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if "statecrawl-text" in names and "statecrawl" in names:  # the text view reuses that run
        names.remove("statecrawl-text")
        names.insert(names.index("statecrawl") + 1, "statecrawl-text")
    scorer = load_scorer(args.scorer, args.data)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, extract in extractors(names).items():
        if extract is None:
            continue
        results[name] = {}
        if args.set in ("scrapinghub", "both"):
            results[name]["scrapinghub"] = scorer.scrapinghub(extract, args.limit)
        if args.set in ("wcxb", "both"):
            results[name]["wcxb-dev"] = scorer.wcxb(extract, args.limit)
        print(f"{name}: " + json.dumps(results[name], separators=(",", ":")), flush=True)
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
