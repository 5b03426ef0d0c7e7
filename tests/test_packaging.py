"""What scrapyd-deploy ships: an egg with the framework, spiders, settings and Lua scripts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_scrapyd_egg_contains_the_project(tmp_path: Path) -> None:
    egg = tmp_path / "statecrawl.egg"
    deploy = Path(sys.executable).with_name("scrapyd-deploy")
    result = subprocess.run([str(deploy), "--build-egg", str(egg)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    names = set(zipfile.ZipFile(egg).namelist())
    for required in ("statecrawl/scheduler.py", "statecrawl/lua/commit.lua", "statecrawl/lua/lease.lua",
                     "statecrawl/lua/release.lua", "spiders/site.py", "settings/base.py",
                     "EGG-INFO/entry_points.txt"):
        assert required in names, required
    assert not any(n.startswith("tests/") for n in names)
    entry_points = zipfile.ZipFile(egg).read("EGG-INFO/entry_points.txt").decode()
    assert "[scrapy]" in entry_points and "settings = settings" in entry_points
