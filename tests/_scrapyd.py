"""The project as users build and deploy it, and a real scrapyd to deploy it to.

Helpers of ``tests/test_packaging.py`` (what pip and scrapyd-deploy build) and
``tests/test_scrapyd.py`` (scrapyd running the project): commands of the test
venv run in a clean environment, a copy of the checkout, and :class:`Scrapyd`,
a ``scrapyd`` process with a private config, eggs, logs and dbs, talked to
over its JSON API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import ROOT

__all__ = ["PROJECT", "Scrapyd", "clean_env", "copy_project", "poll", "run", "venv_command"]

T = TypeVar("T")

#: The scrapyd project name (``project`` in scrapy.cfg's ``[deploy]``).
PROJECT = "statecrawl"

# What a checkout holds besides the project itself: venvs, VCS, caches, build output.
_NOT_PROJECT = shutil.ignore_patterns(".*", "build", "dist", "output", "*.egg-info", "*.egg", "__pycache__")


def venv_command(name: str) -> str:
    """A console script of the test venv (``scrapy``, ``scrapyd-deploy``, ``statecrawl``)."""
    return str(Path(sys.executable).with_name(name))


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything that would pick a project, a Redis or an import path."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("SCRAPY_", "SCRAPYD_", "REDIS_URL", "STATECRAWL_"))}
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


# Every option scrapyd 1.5/1.6 reads that points outside *home* or picks a port.
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

#: Lines of a job log that say something broke (Scrapy logs errors at ERROR, with tracebacks),
#: but for the retry middleware giving up on the demo site's /error.html (a 500 by design).
_BROKEN = re.compile(r"^(?!.*\[scrapy\.downloadermiddlewares\.retry\]).*\] (?:ERROR|CRITICAL):|^Traceback ")


class Scrapyd:
    """A scrapyd started in *home* (its scrapyd.conf, eggs, logs and dbs) on 127.0.0.1:*port*.

    *env* is scrapyd's environment, which its jobs inherit (``REDIS_URL``).
    """

    def __init__(self, home: Path, port: int, env: dict[str, str]) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/"
        home.mkdir(parents=True, exist_ok=True)
        (home / "scrapyd.conf").write_text(_SCRAPYD_CONF.format(port=port, home=home))
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.jobs: list[str] = []  # every job scheduled here, to kill at stop()
        with (home / "scrapyd.out").open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scrapyd"], cwd=home, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return (self.home / "scrapyd.out").read_text(errors="replace")[-4000:]

    def call(self, endpoint: str, data: dict[str, str] | list[tuple[str, str]] | None = None,
             **query: str) -> dict[str, Any]:
        url = self.url + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with self._opener.open(url, data=body, timeout=30) as response:
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

    def schedule(self, spider: str, settings: dict[str, str] | None = None, **args: str) -> str:
        """``schedule.json``: the job id. *settings* are Scrapy settings (``-s``), *args* spider
        arguments (``-a name=value``)."""
        data = [("project", PROJECT), ("spider", spider), *args.items(),
                *(("setting", f"{name}={value}") for name, value in (settings or {}).items())]
        job = str(self.call("schedule.json", data)["jobid"])
        self.jobs.append(job)
        return job

    def job_state(self, job: str) -> str | None:
        """``pending``, ``running`` or ``finished`` (``listjobs.json``), None if unknown."""
        jobs = self.call("listjobs.json", project=PROJECT)
        return next((state for state in ("pending", "running", "finished")
                     if any(j["id"] == job for j in jobs[state])), None)

    def wait_running(self, spider: str, job: str, timeout: float) -> None:
        def running() -> bool | None:
            self.alive()
            state = self.job_state(job)
            assert state != "finished", f"job {job} ended early\n{self.job_log(spider, job)}"
            return True if state == "running" else None

        poll(running, timeout, 0.2, lambda: f"job {job} not started\n{self.job_log(spider, job)}")

    def wait_finished(self, spider: str, job: str, timeout: float) -> None:
        def finished() -> bool | None:
            self.alive()
            return True if self.job_state(job) == "finished" else None

        poll(finished, timeout, 0.2, lambda: f"job {job} unfinished\n{self.job_log(spider, job)}")

    def cancel(self, job: str, signal: str | None = None) -> str:
        """``cancel.json`` (scrapyd's default signal, INT, unless *signal*): the job's previous state."""
        data = {"project": PROJECT, "job": job, **({"signal": signal} if signal else {})}
        return str(self.call("cancel.json", data)["prevstate"])

    def log_text(self, spider: str, job: str) -> str:
        path = self.home / "logs" / PROJECT / spider / f"{job}.log"
        return path.read_text(errors="replace") if path.exists() else f"(no job log at {path})"

    def job_log(self, spider: str, job: str) -> str:
        """The tail of the job's log and of scrapyd's own, for failure messages."""
        text = self.log_text(spider, job)
        return f"--- job {job} log (tail) ---\n{text[-6000:]}\n--- scrapyd {self.url} ---\n{self.output()}"

    def stats(self, spider: str, job: str) -> dict[str, Any]:
        """The stats Scrapy dumped at the end of the job's log (``{}`` if none)."""
        text = self.log_text(spider, job)
        start = text.rfind("Dumping Scrapy stats:\n")
        if start < 0:
            return {}
        body = text[start:].split("\n", 1)[1]
        end = body.find("}\n")
        return dict(_stat_pairs(body[: end + 1]))

    def broken(self, spider: str, job: str) -> list[str]:
        """Lines of the job's log that say something broke."""
        text = self.log_text(spider, job)
        return [line for line in text.splitlines() if _BROKEN.search(line)]

    def kill_jobs(self) -> None:
        """Kill every job scheduled here that is still pending or running."""
        if self.proc.poll() is not None:
            return
        for job in self.jobs:
            with contextlib.suppress(OSError, AssertionError, ValueError):
                if self.job_state(job) in ("pending", "running"):
                    self.cancel(job, "KILL")

    def stop(self) -> None:
        """Kill the jobs still running, so no crawl outlives the test, then stop scrapyd."""
        self.kill_jobs()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _stat_pairs(text: str) -> list[tuple[str, Any]]:
    """``'name': value`` pairs of a pprint-ed stats dict (numbers as numbers, the rest as text)."""
    pairs = []
    for name, value in re.findall(r"'([^']+)':\s*([^,\n}]+)", text):
        value = value.strip()
        pairs.append((name, int(value) if value.isdigit() else value))
    return pairs
