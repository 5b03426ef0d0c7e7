"""Every dotted path the README documents loads, and names what it always named.

Modules moved into subpackages (issue 11); the paths users wrote in their
settings -- ``statecrawl.Addon``, ``statecrawl.scheduler.Scheduler``,
``statecrawl.dupefilter.RedisDupeFilter``, the middlewares and pipelines --
are thin re-exports of the moved code, so they must keep resolving.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
from scrapy.utils.misc import load_object

from tests.conftest import ROOT

#: Paths a project may name in its settings; each must stay (the README names most).
STABLE = [
    "statecrawl.Addon",
    "statecrawl.scheduler.Scheduler",
    "statecrawl.dupefilter.RedisDupeFilter",
    "statecrawl.markdown.to_markdown",
    "statecrawl.markdown.main_content_html",
    "statecrawl.items.Page",
    "statecrawl.pipelines.RedisItemStore",
    "statecrawl.pipelines.MarkdownFiles",
    "statecrawl.feeds.uri_params",
    "statecrawl.robots.RobotsTxtMiddleware",
    "statecrawl.browser.BrowserHandler",
    "statecrawl.browser.block_heavy_resources",
    "statecrawl.render.RenderMiddleware",
    "statecrawl.cookies.RedisCookiesMiddleware",
    "statecrawl.login.LoginMiddleware",
    "statecrawl.pool.SessionMiddleware",
    "statecrawl.passthrough.PassThroughMiddleware",
    "statecrawl.browser_state.BrowserSessionMiddleware",
    "statecrawl.checkpoint.SpiderStateCheckpoint",
    "statecrawl.cli.main",
]


def documented() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return sorted(set(re.findall(r"`(statecrawl(?:\.[A-Za-z_]\w*)+)`", readme))
                  | set(re.findall(r"\b(statecrawl\.[a-z_]+\.[A-Z]\w+)\b", readme)))


@pytest.mark.parametrize("path", sorted(set(STABLE) | set(documented())))
def test_documented_path_loads(path: str) -> None:
    try:
        load_object(path)
    except (ValueError, NameError):  # a module, not an object in one
        importlib.import_module(path)


def test_stable_paths_name_the_moved_objects() -> None:
    from statecrawl.frontier.scheduler import Scheduler
    from statecrawl.output.items import Page
    from statecrawl.sessions.cookies import RedisCookiesMiddleware

    assert load_object("statecrawl.scheduler.Scheduler") is Scheduler
    assert load_object("statecrawl.items.Page") is Page
    assert load_object("statecrawl.cookies.RedisCookiesMiddleware") is RedisCookiesMiddleware


@pytest.mark.parametrize("module", ["statecrawl.cli", "statecrawl.demo.run"])
def test_python_dash_m_entry_points_answer_help(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
