"""Processes of ``bench/api.py``: started in their own process group, logged, always stopped.

``statecrawl worker`` runs its ``scrapy crawl`` child in a process group of
its own, so stopping a group is not enough: :meth:`Procs.stop_all` first
sends SIGTERM to each group (the wrappers pass it on), then SIGKILLs every
process still alive among the ones started and all their descendants (read
from ``/proc`` before the first signal).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "Procs", "base_env", "cpu_seconds", "descendants", "http_json", "percentile",
           "statecrawl_argv", "wait_http", "wait_log"]

ROOT = Path(__file__).resolve().parent.parent


def base_env(**extra: str) -> dict[str, str]:
    """Our environment without Redis or statecrawl settings, the repo importable, loopback allowed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_URL", "STATECRAWL_")) and k != "SCRAPY_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    env["STATECRAWL_NET_ALLOW"] = "127.0.0.1"  # API workers refuse loopback URLs otherwise
    env.update(extra)
    return env


def statecrawl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "statecrawl.cli", *args]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below *pid*."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) the live processes *pids* have used so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Procs:
    """The processes one benchmark run started; :meth:`stop_all` in a ``finally``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, process_group=0)
        self.running[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def tail(self, name: str, lines: int = 15) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self, *names: str) -> list[int]:
        """The pids of the named processes and of all their descendants."""
        found = []
        for name in names:
            proc = self.running.get(name)
            if proc is not None and proc.poll() is None:
                found += [proc.pid, *descendants(proc.pid)]
        return found

    def stop(self, *names: str, timeout: float = 15.0) -> None:
        """SIGTERM each group, wait up to *timeout* s in all, then SIGKILL whatever is left."""
        procs = [(n, self.running.pop(n)) for n in names if n in self.running]
        below = {n: descendants(p.pid) for n, p in procs}
        for _name, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in {timeout:.0f} s: killed", flush=True)
            for pid in [proc.pid, *below[name]]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # its group, if it leads one
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def stop_all(self) -> None:
        self.stop(*list(self.running))


def wait_log(path: Path, text: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Whether *text* shows up in the log *path* within *timeout* s (False: it did not, or
    *proc* exited first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request; HTTP errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until GET *url* answers 200; raises RuntimeError on timeout or if *proc* exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if http_json("GET", url, timeout=2)[0] == 200:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of *values*; nan when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
