"""Worker liveness: a heartbeat thread that also reclaims dead workers' leases,
a watchdog process that gives a worker's leases back the moment its process
dies (:mod:`statecrawl.frontier._watchdog`), and a pub/sub listener that wakes the
worker when work appears.

Why a thread: the heartbeat must keep going while the reactor is busy (a long
callback, a slow render), or a live worker's leases would be taken from it.
The thread has its own blocking Redis connection and never touches the
reactor; it only hands events to the asyncio loop with
``call_soon_threadsafe``.

Each beat runs ``heartbeat.lua``: record this worker as alive (Redis clock),
then put back into the frontier every lease held by a worker silent for
longer than the timeout. Any live worker can do the reclaim; the script is
atomic, so each lease is reclaimed exactly once. A worker that finds itself
forgotten (it was silent too long, e.g. Redis was unreachable) is told so,
since its leases may now belong to others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.exceptions import RedisError

from statecrawl.frontier.cluster import is_cluster_url, node_urls, parse_cluster_url
from statecrawl.frontier.connection import redis_from_url
from statecrawl.frontier.store import heartbeat_keys, script_source

if TYPE_CHECKING:
    from statecrawl.frontier.keys import CrawlKeys

__all__ = ["INFO_EVERY", "HeartbeatThread", "Liveness", "listen_for_work", "start_watchdog"]

#: Seconds between two heartbeats that carry the worker's info (the others only beat).
INFO_EVERY = 1.0

logger = logging.getLogger(__name__)

#: ``python -c`` program of the watchdog process: run the watchdog's source, the first line of
#: its stdin (JSON). It needs no file, so it starts when statecrawl is imported from a zip
#: (a scrapyd egg); ``_watchdog.py`` in it names the process in ``ps``. The worker's current
#: directory, which ``-c`` puts first on ``sys.path``, is taken off: a ``json.py`` or
#: ``redis.py`` there must not be what the watchdog imports.
_WATCHDOG_BOOTSTRAP = ("import sys; getattr(sys.flags, 'safe_path', 0) or sys.path.pop(0); import json; "
                       "exec(compile(json.loads(sys.stdin.buffer.readline()), "
                       "'statecrawl/frontier/_watchdog.py', 'exec'))")


class HeartbeatThread(threading.Thread):
    """Beat every *interval* s; declare workers silent for *timeout* s dead."""

    def __init__(
        self, *, url: str, keys: CrawlKeys, worker: str, interval: float, timeout: float,
        loop: asyncio.AbstractEventLoop, on_reclaimed: Callable[[int, list[str]], None],
        on_forgotten: Callable[[], None], on_recovered: Callable[[], None],
        info: Callable[[], str] | None = None, shards: int = 1,
    ) -> None:
        super().__init__(name=f"statecrawl-heartbeat-{worker}", daemon=True)
        self.url, self.keys, self.worker = url, keys, worker
        self.shards = shards  # > 1: also sweep dead workers' leases out of shards 1..n-1
        self.interval, self.timeout_ms = interval, int(timeout * 1000)
        self.loop = loop
        self.on_reclaimed, self.on_forgotten = on_reclaimed, on_forgotten
        self.on_recovered = on_recovered
        self.info = info  # what this worker tells of itself, sent once a second (INFO_EVERY)
        self._stop_event = threading.Event()
        self._sweeper: Any = None

    def stop(self) -> None:
        self._stop_event.set()

    def _client(self) -> Any:
        """This thread's own blocking client (a cluster one for a cluster URL: it connects
        here, and may raise ConnectionError)."""
        return redis_from_url(self.url, sync=True, socket_timeout=max(1.0, self.interval * 5),
                              socket_connect_timeout=2.0)

    def run(self) -> None:
        client: Any = None
        script: Any = None
        source = script_source("host_done.lua", "heartbeat.lua")
        keys = heartbeat_keys(self.keys)
        failing = False
        last = told = swept = time.monotonic()
        try:
            while not self._stop_event.wait(self.interval):
                now = time.monotonic()
                if (now - last) * 1000 > self.timeout_ms / 2:
                    # the process did not run this thread (GIL held, CPU starved)
                    logger.warning("statecrawl: heartbeat %.0f ms late; at %d ms others "
                                   "declare this worker dead", (now - last - self.interval) * 1000,
                                   self.timeout_ms)
                last = now
                try:
                    args: list[object] = [self.worker, self.timeout_ms]
                    if self.info is not None and now - told >= INFO_EVERY:
                        args.append(self.info())
                        told = now
                    if client is None:
                        client = self._client()
                        script = client.register_script(source)
                    out = script(keys=keys, args=args)
                except (RedisError, OSError) as exc:
                    if not failing:
                        logger.warning("statecrawl: heartbeat cannot reach Redis (%s); retrying", exc)
                    failing = True
                    continue
                if failing:
                    failing = False
                    self.loop.call_soon_threadsafe(self.on_recovered)
                if not out[0]:
                    self.loop.call_soon_threadsafe(self.on_forgotten)
                if int(out[1]) or len(out) > 2:
                    dead = [w.decode() for w in out[2:]]
                    self.loop.call_soon_threadsafe(self.on_reclaimed, int(out[1]), dead)
                if self.shards > 1 and (now - swept) * 1000 >= self.timeout_ms / 2:
                    swept = now
                    try:
                        reclaimed = self._sweep(client)
                    except (RedisError, OSError) as exc:
                        logger.warning("statecrawl: cannot sweep the crawl's shards (%s)", exc)
                        continue
                    if reclaimed:
                        self.loop.call_soon_threadsafe(self.on_reclaimed, reclaimed, [])
        finally:
            if client is not None:
                client.close()

    def _sweep(self, client: Any) -> int:
        """Give back the leases held in shards 1..n-1 by workers shard 0 no longer lists
        (statecrawl.frontier.shards); returns how many."""
        if self._sweeper is None:
            self._sweeper = client.register_script(script_source("host_done.lua", "sweep_orphans.lua"))
        live = [w.decode() for w in client.zrange(self.keys.workers, 0, -1)]
        reclaimed = 0
        for shard in range(1, self.shards):
            k = self.keys.of_shard(shard)
            reclaimed += int(self._sweeper(keys=[k.queue, k.leases, k.stats, k.ready, k.hosts,
                                                 k.workers], args=[self.timeout_ms, *live]))
        return reclaimed


def start_watchdog(url: str, keys: CrawlKeys, worker: str) -> subprocess.Popen[bytes]:
    """Start the worker's watchdog process; close its stdin to let it go.

    The pipe's write end stays in this process only (Python's pipes are
    close-on-exec, so browsers and other children never hold it): when this
    process dies, by any signal, the watchdog reads EOF and gives the
    worker's leases back.
    """
    program = resources.files("statecrawl.frontier").joinpath("_watchdog.py").read_text()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG_BOOTSTRAP],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    assert proc.stdin is not None
    config: dict[str, object] = {
        "url": url, "keys": heartbeat_keys(keys), "worker": worker,
        "script": script_source("host_done.lua", "requeue_owned.lua", "leave.lua")}
    if is_cluster_url(url):  # the watchdog knows only redis-py: one seed's URL, and the seeds
        seeds = parse_cluster_url(url)
        config.update(url=seeds.node_url, nodes=[list(node) for node in seeds.nodes])
    proc.stdin.write(json.dumps(program).encode() + b"\n" + json.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    return proc


async def listen_for_work(url: str, channel: str | Sequence[str],
                          on_work: Callable[[str], None]) -> None:
    """Call *on_work(kind)* for each message on *channel* (or each of several: a sharded
    crawl's shards), reconnecting with backoff, forever.

    *kind* is the message: ``work`` (requests entered an empty frontier),
    ``reclaimed`` (a dead worker's leases came back) or ``released`` (a
    stopping worker gave its leases back).
    """
    # On a cluster a message published on any node (by PUBLISH or a script) reaches every
    # node: subscribe on one seed, the next one after each lost connection.
    urls = node_urls(url) if is_cluster_url(url) else [url]
    backoff, attempt = 0.1, 0
    while True:
        client = redis.asyncio.Redis.from_url(urls[attempt % len(urls)])
        attempt += 1
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(*([channel] if isinstance(channel, str) else channel))
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        data = message.get("data")
                        on_work(data.decode() if isinstance(data, bytes) else str(data))
        except (RedisError, OSError) as exc:
            logger.debug("statecrawl: work listener lost Redis (%s); reconnecting", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            await client.aclose()


class Liveness:
    """One worker's liveness, started and stopped as one: heartbeat, watchdog, work listener."""

    def __init__(
        self, *, url: str, keys: CrawlKeys, worker: str, interval: float, timeout: float,
        watchdog: bool, on_work: Callable[[str], None],
        on_reclaimed: Callable[[int, list[str]], None], on_forgotten: Callable[[], None],
        on_recovered: Callable[[], None], info: Callable[[], str] | None = None,
        shards: int = 1,
    ) -> None:
        self.url, self.keys, self.worker, self.use_watchdog = url, keys, worker, watchdog
        self.channels = [keys.of_shard(s).queue for s in range(shards)]
        self.on_work = on_work
        self.heartbeat: HeartbeatThread | None = HeartbeatThread(
            url=url, keys=keys, worker=worker, interval=interval, timeout=timeout,
            loop=asyncio.get_running_loop(), on_reclaimed=on_reclaimed,
            on_forgotten=on_forgotten, on_recovered=on_recovered, info=info, shards=shards,
        )
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.heartbeat is not None
        self.heartbeat.start()
        if self.use_watchdog:
            self.watchdog = await asyncio.to_thread(start_watchdog, self.url, self.keys, self.worker)
        self.listener = asyncio.ensure_future(listen_for_work(self.url, self.channels, self.on_work))

    async def stop_heartbeat(self) -> None:
        """Stop beating (before leaving: a beat after leave.lua would register a ghost)."""
        beat, self.heartbeat = self.heartbeat, None
        if beat is not None:
            beat.stop()
            await asyncio.to_thread(beat.join, 5)

    async def stop(self, wait: float) -> None:
        """Stop all three; the watchdog runs leave (a no-op now) and gets *wait* s to exit."""
        await self.stop_heartbeat()
        proc, self.watchdog = self.watchdog, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                await asyncio.to_thread(proc.wait, wait)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.listener is not None:
            self.listener.cancel()
