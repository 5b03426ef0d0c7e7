"""What ``pip install statecrawl`` installs, and what scrapyd-deploy ships to scrapyd.

The wheel (and the editable install) hold the framework only: top-level
``settings`` and ``spiders`` packages in site-packages would shadow those of
every other flat Scrapy project in the environment (Scrapy appends the project
directory to ``sys.path``, after site-packages). The scrapyd egg is the Scrapy
project: the framework, ``spiders/``, ``settings/`` and the ``scrapy`` entry
point that tells scrapyd the settings module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from statecrawl.demo.site import DemoSite
from statecrawl.frontier.store import CrawlStore
from tests.conftest import ROOT, free_port, run_store

T = TypeVar("T")

# What a checkout holds besides the project itself: venvs, VCS, caches, build output.
_NOT_PROJECT = shutil.ignore_patterns(".*", "build", "dist", "output", "*.egg-info", "*.egg", "__pycache__")


def venv_command(name: str) -> str:
    """A console script of the test venv (``scrapy``, ``scrapyd-deploy``)."""
    return str(Path(sys.executable).with_name(name))


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything that would pick a project, a Redis or an import path."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("SCRAPY_", "REDIS_URL", "STATECRAWL_"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env if env is not None else clean_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{cmd} exited {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_project(dest: Path) -> Path:
    """The checkout as a user builds or deploys it, in *dest*: no venv, VCS or build output."""
    shutil.copytree(ROOT, dest, ignore=_NOT_PROJECT)
    return dest


def archive(path: Path) -> dict[str, bytes]:
    """Every file of a wheel or an egg, by name."""
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def build_egg(project: Path, egg: Path) -> dict[str, bytes]:
    """``scrapyd-deploy --build-egg`` in *project*: the files of the egg a deploy uploads."""
    run([venv_command("scrapyd-deploy"), "--build-egg", str(egg)], cwd=project, timeout=180)
    return archive(egg)


def poll(check: Callable[[], T | None], timeout: float, interval: float,
         failure: Callable[[], str]) -> T:
    """*check()* every *interval* seconds until it returns something, at most *timeout* seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"nothing after {timeout:.0f}s\n{failure()}")


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


# -- a real scrapyd --------------------------------------------------------------------

_SCRAPYD_CONF = """\
[scrapyd]
bind_address = 127.0.0.1
http_port = {port}
eggs_dir = {home}/eggs
logs_dir = {home}/logs
dbs_dir = {home}/dbs
items_dir =
jobs_dir =
jobs_to_keep = 5
max_proc = 1
poll_interval = 0.5
"""


class Scrapyd:
    """A scrapyd started in *home* (its scrapyd.conf, eggs, logs and dbs) on 127.0.0.1:*port*."""

    def __init__(self, home: Path, port: int, env: dict[str, str]) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/"
        (home / "scrapyd.conf").write_text(_SCRAPYD_CONF.format(port=port, home=home))
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with (home / "scrapyd.out").open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scrapyd"], cwd=home, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return (self.home / "scrapyd.out").read_text(errors="replace")[-4000:]

    def call(self, endpoint: str, data: dict[str, str] | None = None, **query: str) -> dict[str, Any]:
        url = self.url + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with self._opener.open(url, data=body, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
        assert answer.get("status") == "ok", (endpoint, answer)
        return answer

    def alive(self) -> None:
        assert self.proc.poll() is None, f"scrapyd exited {self.proc.returncode}:\n{self.output()}"

    def wait_ready(self, timeout: float = 30) -> None:
        def answers() -> bool | None:
            self.alive()
            try:
                self.call("daemonstatus.json")
                return True
            except (urllib.error.URLError, ConnectionError):
                return None

        poll(answers, timeout, 0.2, self.output)

    def wait_finished(self, project: str, spider: str, job: str, timeout: float) -> None:
        def finished() -> bool | None:
            self.alive()
            jobs = self.call("listjobs.json", project=project)["finished"]
            return True if any(j["id"] == job for j in jobs) else None

        poll(finished, timeout, 0.5, lambda: f"job {job} unfinished\n{self.job_log(project, spider, job)}")

    def job_log(self, project: str, spider: str, job: str) -> str:
        path = self.home / "logs" / project / spider / f"{job}.log"
        text = path.read_text(errors="replace") if path.exists() else f"(no job log at {path})"
        return f"--- job log (tail) ---\n{text[-6000:]}\n--- scrapyd ---\n{self.output()}"

    def stop(self, project: str, job: str | None) -> None:
        """Kill *job* if it still runs, so no crawl outlives the test, then stop scrapyd."""
        if job is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError, ValueError):
                self.call("cancel.json", {"project": project, "job": job, "signal": "KILL"})
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.mark.slow
def test_scrapyd_deploy_and_crawl(tmp_path: Path, redis_url: str, crawl_id: str, site: DemoSite) -> None:
    """scrapyd-deploy uploads the project egg to a real scrapyd, which crawls the demo site.

    The crawl's settings and spider come from the egg alone: the test venv has
    only the ``statecrawl`` package installed and scrapyd's jobs run in its
    own directory, with no PYTHONPATH.
    """
    port = free_port()
    project = copy_project(tmp_path / "project")
    with (project / "scrapy.cfg").open("a") as cfg:  # the repo's scrapy.cfg, plus our target
        cfg.write(f"\n[deploy:test]\nurl = http://127.0.0.1:{port}/\nproject = statecrawl\n")
    home = tmp_path / "scrapyd"
    home.mkdir()
    env = clean_env(REDIS_URL=redis_url, STATECRAWL_OUTPUT_DIR=str(tmp_path / "output"))
    scrapyd = Scrapyd(home, port, env)
    job: str | None = None
    try:
        scrapyd.wait_ready()
        deploy = run([venv_command("scrapyd-deploy"), "test", "--version", "1"], cwd=project, timeout=180)
        answer = json.loads(deploy.stdout)
        assert answer["status"] == "ok" and answer["project"] == "statecrawl", deploy.stdout
        assert "site" in scrapyd.call("listspiders.json", project="statecrawl")["spiders"]
        job = scrapyd.call("schedule.json", {"project": "statecrawl", "spider": "site",
                                             "url": f"{site.url}/", "crawl_id": crawl_id})["jobid"]
        scrapyd.wait_finished("statecrawl", "site", job, timeout=120)
        log = scrapyd.job_log("statecrawl", "site", job)

        async def snapshot(store: CrawlStore) -> tuple[dict[str, Any], list[Any]]:
            return await store.status(), [item async for _, item in store.iter_items()]

        status, items = run_store(redis_url, crawl_id, snapshot)
        assert status["state"] == "finished", f"{status}\n{log}"
        assert status["queued"] == 0 and status["in_flight"] == 0, f"{status}\n{log}"
        urls = [item["url"] for item in items]
        assert len(urls) == len(set(urls)) == status["done"], f"{sorted(urls)}\n{log}"
        pages = {item["url"]: item for item in items if item["url"] in set(site.page_urls())}
        assert sorted(pages) == sorted(site.page_urls()), log
        assert all(item["status"] == 200 for item in pages.values()), log
        assert set(urls) == site.expected_urls(), log
    finally:
        scrapyd.stop("statecrawl", job)
