"""A worker's watchdog: gives its leases back the moment its process dies.

The heartbeat alone finds a dead worker only after ``STATECRAWL_WORKER_TIMEOUT``
of silence, and that timeout cannot be short: a live worker whose heartbeat
thread waits for the GIL, or for a CPU on a loaded machine, is 100-200 ms
late now and then, and a false "dead" costs a duplicate fetch. Most deaths are
of the process (SIGKILL, the OOM killer, a crash), and those the kernel
reports at once: this small process holds the read end of a pipe whose only
write end is in the worker, and when the worker dies the read returns EOF.
The watchdog then runs ``leave.lua`` for the worker's id (its leases go back
to the frontier, counted as reclaimed, and idle workers are woken) and exits.
A worker that stops normally has already left; the second ``leave`` is a
no-op. A machine lost whole still needs the heartbeat timeout.

It is started by :func:`statecrawl.frontier.liveness.start_watchdog` as
``python -c BOOTSTRAP``, which runs this file's source, read as the first
line of stdin (JSON). Not ``-m``, so it imports neither Scrapy nor statecrawl:
it starts in ~0.1 s and uses ~20 MB. Not ``python _watchdog.py`` either:
statecrawl may be imported from a zip, where this file has no path of its own
(scrapyd's egg comes before an editable install on ``sys.path``). It then
reads one JSON line of configuration, the Lua it runs included (the Redis
URL is never on the command line, where ``ps`` would show its password), and
blocks reading stdin until EOF. For a Redis Cluster the configuration
carries the seed nodes (``nodes``) and the first seed's ``redis://`` URL,
parsed by :mod:`statecrawl.frontier.cluster` in the worker: the watchdog
builds redis-py's ``RedisCluster`` from them and needs no parser of its own. SIGINT and SIGTERM are ignored: a Ctrl-C to
the process group must not make it leave before the worker has drained.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

#: How long to keep trying to reach Redis after the worker died.
RETRY_FOR = 60.0


#: What a failed call may raise: redis-py's errors, and the cluster client's "cannot connect".
FAILURES = (redis.RedisError, RedisClusterException, OSError)


def client(config: dict[str, object]) -> Any:
    """The Redis client: a cluster one when the config lists the cluster's seed ``nodes``
    (``url`` is then the first seed's redis:// URL); it connects at once, and may raise."""
    url, nodes = str(config["url"]), config.get("nodes")
    if isinstance(nodes, list) and nodes:
        seeds = [ClusterNode(str(host), int(port)) for host, port in nodes[1:]]
        return RedisCluster.from_url(url, startup_nodes=seeds, socket_timeout=5,
                                     socket_connect_timeout=5)
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


class Leaver:
    """Runs leave.lua for the worker; connects and loads the script up front."""

    def __init__(self, config: dict[str, object]) -> None:
        self.source = str(config["script"])  # requeue_owned.lua + leave.lua
        self.config = config
        self.keys, self.worker = config["keys"], str(config["worker"])
        self.client: Any = None
        try:  # so that the leave itself is one EVALSHA on an open connection
            self._connect()
            self.client.script_load(self.source)
        except FAILURES:
            pass  # Redis is down now; the leave retries

    def _connect(self) -> None:
        if self.client is None:
            self.client = client(self.config)
            self.script = self.client.register_script(self.source)

    def leave(self) -> int:
        """Give the worker's leases back; returns how many. Retries for RETRY_FOR s."""
        deadline = time.monotonic() + RETRY_FOR
        try:
            while True:
                try:
                    self._connect()
                    return int(self.script(keys=self.keys, args=[self.worker, "reclaimed"]))
                except FAILURES:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            if self.client is not None:
                self.client.close()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:
        return 0  # the worker died before configuring us
    config = json.loads(line)
    leaver = Leaver(config)
    while stdin.read(4096):  # blocks until the worker's end of the pipe closes
        pass
    reclaimed = leaver.leave()
    if reclaimed:
        print(f"statecrawl watchdog: worker {config['worker']} died holding {reclaimed} "
              "leases; they are back in the frontier", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
