"""The tree shows the architecture: imports point one way, modules stay small, the README lists them.

Subpackages by concern (see the README's Architecture): ``content`` and the
``frontier`` use no other subpackage; ``net`` (the network guard),
``output`` and ``sessions`` use the frontier; ``render`` uses the frontier,
content and output; the ``site`` spider uses the runtime; the CLI and the
add-on use everything (the CLI's ``serve`` runs the ``api``); ``api``
(the HTTP API: its models, job store and ASGI app) uses the frontier (to
enqueue scrapes into a service crawl), sessions (to seal headers) and net
(the address policy its webhooks are sent under); the ``job`` and ``scrape``
spiders use the api's worker side (job documents). No import --
at module level or inside a function -- may point the other way, so no two
subpackages import each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "statecrawl"
#: subpackage -> the subpackages it may import (the top-level ``exceptions`` is open to all)
ALLOWED: dict[str, set[str]] = {
    "content": set(),
    "frontier": set(),
    "net": {"frontier"},
    "output": {"frontier", "content"},
    "sessions": {"frontier"},
    "render": {"frontier", "content", "output"},
    "spiders": {"frontier", "content", "output", "render", "sessions", "api"},
    "observe": {"frontier"},
    "cli": {"frontier", "content", "output", "net", "render", "sessions", "spiders", "api",
            "observe"},
    "demo": {"cli", "frontier", "output"},
    "api": {"frontier", "sessions", "net", "observe"},
}
#: Top-level modules: the package's face and the stable paths Scrapy settings name.
FACE = {"__init__", "addon", "exceptions"}
MAX_LINES = 420


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def subpackage(module: str) -> str | None:
    """``statecrawl.frontier.store`` -> ``frontier``; None for top-level modules."""
    parts = module.split(".")
    if parts[0] != "statecrawl" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else None


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("statecrawl")}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts
    if len(own) == 1:
        return  # top level: the add-on and the stable paths may use anything
    allowed = ALLOWED[own[0]] | {own[0]}
    wrong = sorted(m for m in imported(path)
                   if (sub := subpackage(m)) is not None and sub not in allowed)
    assert not wrong, f"statecrawl/{own[0]} may import only {sorted(allowed)}; {path} imports {wrong}"


def test_top_level_is_the_face_and_stable_paths() -> None:
    for path in PACKAGE.glob("*.py"):
        if path.stem in FACE:
            continue
        for node in ast.parse(path.read_text()).body:
            reexport = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["__all__"])
            assert reexport, f"{path.name} should only re-export a moved path (line {node.lineno})"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines: split it along a seam"


def test_readme_layout_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layout -->\n```\n(.*?)```", readme, re.S)
    assert block, "README.md has no layout block (<!-- layout --> then a fenced list)"
    listed, folder = set(), ""
    for line in block.group(1).splitlines():  # "statecrawl/frontier/  a.py b.py", continued
        if m := re.match(r"(statecrawl/(?:\w+/)*)\s", line):
            folder = m.group(1)
        listed.update(folder + name for name in re.findall(r"\b[\w]+\.py\b", line))
    actual = {str(p.relative_to(ROOT)) for p in modules()}
    assert listed == actual, (f"missing from the README: {sorted(actual - listed)}; "
                              f"listed but gone: {sorted(listed - actual)}")
