"""What ``pip install statecrawl`` installs, and what scrapyd-deploy ships to scrapyd.

The wheel (and the editable install) hold the framework only: top-level
``settings`` and ``spiders`` packages in site-packages would shadow those of
every other flat Scrapy project in the environment (Scrapy appends the project
directory to ``sys.path``, after site-packages). The scrapyd egg is the Scrapy
project: the framework, ``spiders/``, ``settings/`` and the ``scrapy`` entry
point that tells scrapyd the settings module; ``tests/test_scrapyd.py`` deploys
it to real scrapyd instances and crawls with them.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from tests._scrapyd import clean_env, copy_project, run, venv_command
from tests.conftest import ROOT


def archive(path: Path) -> dict[str, bytes]:
    """Every file of a wheel or an egg, by name."""
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def build_egg(project: Path, egg: Path) -> dict[str, bytes]:
    """``scrapyd-deploy --build-egg`` in *project*: the files of the egg a deploy uploads."""
    run([venv_command("scrapyd-deploy"), "--build-egg", str(egg)], cwd=project, timeout=180)
    return archive(egg)


# -- the scrapyd egg ---------------------------------------------------------------------


def test_scrapyd_egg_contains_the_project(tmp_path: Path) -> None:
    egg = build_egg(ROOT, tmp_path / "statecrawl.egg")
    names = set(egg)
    for required in ("statecrawl/scheduler.py", "statecrawl/frontier/lua/commit.lua", "statecrawl/frontier/lua/lease.lua",
                     "statecrawl/frontier/lua/release.lua", "statecrawl/py.typed", "spiders/site.py",
                     "settings/base.py", "EGG-INFO/entry_points.txt"):
        assert required in names, required
    assert {n.split("/", 1)[0] for n in names} == {"statecrawl", "spiders", "settings", "EGG-INFO"}
    assert not any(n.startswith("tests/") for n in names)
    entry_points = egg["EGG-INFO/entry_points.txt"].decode()
    assert "[scrapy]" in entry_points and "settings = settings" in entry_points
    assert egg["EGG-INFO/top_level.txt"].decode().split() == ["settings", "spiders", "statecrawl"]


# -- the wheel: pip install statecrawl ---------------------------------------------------


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, its source tree): built with pip from a copy of the checkout in which
    scrapyd-deploy has just built an egg, as in a checkout used for deploys; nothing
    the egg build leaves behind may end up in the wheel."""
    source = copy_project(tmp_path_factory.mktemp("wheel") / "statecrawl")
    build_egg(source, source.parent / "project.egg")
    dist = source.parent / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(dist), "."], cwd=source)
    wheels = list(dist.glob("statecrawl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], source


def test_wheel_holds_only_the_framework(built_wheel: tuple[Path, Path]) -> None:
    wheel, source = built_wheel
    files = archive(wheel)
    names = list(files)
    dist_info = next(n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info"))
    stray = [n for n in names if not n.startswith(("statecrawl/", f"{dist_info}/"))]
    assert stray == [], stray
    assert not any(n.startswith(("settings/", "spiders/", "tests/")) for n in names)
    lua = sorted(f"statecrawl/frontier/lua/{p.name}" for p in (source / "statecrawl" / "frontier" / "lua").glob("*.lua"))
    assert lua and sorted(n for n in names if n.startswith("statecrawl/frontier/lua/")) == lua
    assert "statecrawl/py.typed" in names and "statecrawl/scheduler.py" in names
    assert files[f"{dist_info}/top_level.txt"].decode().split() == ["statecrawl"]
    entry_points = files[f"{dist_info}/entry_points.txt"].decode()
    assert "statecrawl = statecrawl.cli:main" in entry_points
    assert "[scrapy]" not in entry_points  # the settings module it names is not installed


# -- another Scrapy project in the same environment --------------------------------------

_FLAT_SPIDER = '''\
from scrapy import Spider

import statecrawl  # noqa: F401 - the framework is importable from this project


class FlatSpider(Spider):
    name = "flatspider"
'''


@pytest.mark.parametrize("install", ["editable", "wheel"])
def test_other_flat_project_keeps_its_own_settings_and_spiders(
    install: str, built_wheel: tuple[Path, Path], tmp_path: Path,
) -> None:
    """``scrapy list`` in a flat project sees its spiders and BOT_NAME, not statecrawl's.

    Run with the ``scrapy`` command, as users do: ``python -m scrapy`` puts the
    current directory first on ``sys.path`` and would hide the shadowing. The
    editable install is the test venv's own; the wheel is installed into a
    directory that stands first on PYTHONPATH, where site-packages stands.
    """
    flat = tmp_path / "flat"
    (flat / "spiders").mkdir(parents=True)
    (flat / "scrapy.cfg").write_text("[settings]\ndefault = settings\n")
    (flat / "settings.py").write_text(
        'BOT_NAME = "flat"\nSPIDER_MODULES = ["spiders"]\nNEWSPIDER_MODULE = "spiders"\n')
    (flat / "spiders" / "__init__.py").write_text("")
    (flat / "spiders" / "flat.py").write_text(_FLAT_SPIDER)
    env = clean_env()
    if install == "wheel":
        site_dir = tmp_path / "site-packages"
        run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
             "--target", str(site_dir), str(built_wheel[0])], cwd=tmp_path)
        env["PYTHONPATH"] = str(site_dir)
    spiders = run([venv_command("scrapy"), "list"], cwd=flat, env=env, timeout=120).stdout
    assert spiders.split() == ["flatspider"]
    bot_name = run([venv_command("scrapy"), "settings", "--get", "BOT_NAME"], cwd=flat, env=env,
                   timeout=120).stdout
    assert bot_name.strip() == "flat"
