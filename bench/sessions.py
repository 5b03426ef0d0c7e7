"""What durable sessions cost: checkpoint time, bytes per session, a session flush.

    .venv/bin/python bench/sessions.py [--rounds 2000]

Starts a private ``redis-server`` (no persistence) on a free port and prints:

* **checkpoint**: ``spider.state`` saved as the checkpoint extension saves
  it (JSON snapshot, sealed with ``STATECRAWL_SECRET_KEY`` or not, one
  ``SET``), for a cursor-sized state (~40 B), a 1 KB and a 16 KB state.
  ``blocking`` is the part that runs on the event loop without yielding
  (JSON + encryption): what a checkpoint takes from the reactor. ``total``
  adds the round trip to Redis (the loop serves other work meanwhile).
* **bytes per session**: a typical logged-in session -- a jar of 6 cookies
  (a 32-hex session id, a 64-hex CSRF token, preferences, analytics ids),
  its record in the ``sessions`` hash, and a browser storage state (those
  cookies + 3 localStorage entries) -- measured with ``MEMORY USAGE``
  (jar, storage state) and the record's length, plain and encrypted.
* **session flush**: one ``SessionStore.flush`` (the worker's periodic
  write: one changed cookie, one session's counts, the pool read back), as
  a worker does once per ``STATECRAWL_SESSION_FLUSH_INTERVAL``.

Figures are medians (and p95) over ``--rounds``; they are never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import start_redis  # noqa: E402  (bench/ is on sys.path when run as a script)
from cryptography.fernet import Fernet
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy import Request
from scrapy.http import Response

from statecrawl.frontier.serialize import dumps
from statecrawl.sessions.crypto import Sealer
from statecrawl.sessions.jar import SessionJar
from statecrawl.sessions.store import PoolLimits, SessionDelta, SessionStore


def states() -> dict[str, dict[str, object]]:
    cursor = {"page": 4812, "done": False}
    medium = {"page": 4812, "seen_ids": [f"id-{i:06d}" for i in range(80)]}
    large = {"page": 4812, "seen_ids": [f"id-{i:06d}" for i in range(1400)]}
    return {"cursor": cursor, "1 KB": medium, "16 KB": large}


def quantiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def session_jar() -> SessionJar:
    url = "https://shop.example/account"
    jar = SessionJar("default")
    request = Request(url)
    headers = ["sessionid=" + "a1" * 16 + "; Path=/; HttpOnly; Secure",
               "csrftoken=" + "9f" * 32 + "; Path=/; Max-Age=31449600",
               "lang=en-GB; Path=/; Max-Age=31449600", "theme=dark; Path=/",
               "_ga=GA1.2.1234567890.1700000000; Path=/; Max-Age=63072000",
               "_gid=GA1.2.987654321.1700000000; Path=/; Max-Age=86400"]
    response = Response(url, headers={"Set-Cookie": headers}, request=request)
    for cookie in jar.jar.make_cookies(response, request):
        jar.jar.set_cookie_if_ok(cookie, request)
    return jar


def storage_state(jar: SessionJar) -> dict[str, object]:
    cookies = [{"name": c.name, "value": c.value, "domain": c.domain, "path": c.path,
                "expires": c.expires or -1, "httpOnly": False, "secure": c.secure,
                "sameSite": "Lax"} for c in jar.jar]
    return {"cookies": cookies, "origins": [{"origin": "https://shop.example", "localStorage": [
        {"name": "auth_token", "value": "eyJ" + "x" * 300},
        {"name": "cart", "value": json.dumps({"items": [1, 2, 3]})},
        {"name": "consent", "value": "granted"}]}]}


async def bench_checkpoint(client: Redis, sealer: Sealer, state: dict[str, object],
                           rounds: int) -> tuple[int, list[float], list[float]]:
    """(bytes stored, blocking ms, total ms) of *rounds* checkpoints of *state*."""
    key = SessionStore(client, "bench-checkpoint", sealer).keys.spider_state
    blocking, total, stored = [], [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        body = dumps(state, "spider.state")  # SessionStore.save_spider_state, unrolled
        sealed = sealer.seal(body)  # so the part on the loop is timed alone
        t1 = time.perf_counter()
        await client.set(key, sealed)
        t2 = time.perf_counter()
        blocking.append((t1 - t0) * 1000)
        total.append((t2 - t0) * 1000)
        stored = len(sealed)
    return stored, blocking, total


async def bench_flush(client: Redis, pool: int, rounds: int) -> list[float]:
    """ms per session flush: one changed cookie, one session's counts, the pool read back."""
    store = SessionStore(client, f"bench-flush-{pool}", Sealer())
    limits = PoolLimits(size=pool, max_uses=0, max_errors=0, max_age=0, proxies=2)
    jar = session_jar()
    await store.flush(limits, jars={"default": jar.take_changes()}, ensure=["default"])
    url = "https://shop.example/"
    out = []
    for n in range(rounds):
        t0 = time.perf_counter()
        request = Request(url)
        response = Response(url, headers={"Set-Cookie": [f"seen={n}; Path=/"]}, request=request)
        for cookie in jar.jar.make_cookies(response, request):
            jar.jar.set_cookie_if_ok(cookie, request)
        changes = jar.take_changes()
        await store.flush(limits, jars={"default": changes},
                          deltas={"default": SessionDelta(uses=3, errors=-0.5)})
        jar.written(changes)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(port: int, rounds: int) -> None:
    client = Redis(port=port)
    sealers = {"plain": Sealer(), "encrypted": Sealer([Fernet.generate_key().decode()])}
    print(f"checkpoint (median / p95 over {rounds} rounds)")
    print(f"  {'state':<8} {'mode':<10} {'bytes':>7} {'blocking ms':>14} {'total ms':>14}")
    for name, state in states().items():
        for mode, sealer in sealers.items():
            stored, blocking, total = await bench_checkpoint(client, sealer, state, rounds)
            (b50, b95), (t50, t95) = quantiles(blocking), quantiles(total)
            print(f"  {name:<8} {mode:<10} {stored:>7} {b50:>6.3f} / {b95:<6.3f} "
                  f"{t50:>6.3f} / {t95:<6.3f}")

    print("\nbytes per session (a logged-in session: 6 cookies, record, storage state)")
    for mode, sealer in sealers.items():
        store = SessionStore(client, f"bench-size-{mode}", sealer)
        jar = session_jar()
        limits = PoolLimits(size=0, max_uses=50, max_errors=3, max_age=0, proxies=2)
        await store.flush(limits, jars={"default": jar.take_changes()}, ensure=["default"],
                          deltas={"default": SessionDelta(uses=1)})
        await store.save_storage_state("default", storage_state(jar))
        k = store.keys
        jar_bytes = await client.memory_usage(k.jar("default"), samples=0)
        record = len(await client.hget(k.sessions, "default") or b"")
        browser = await client.memory_usage(k.browser("default"), samples=0)
        print(f"  {mode:<10} jar {jar_bytes} B (MEMORY USAGE), record {record} B, "
              f"storage state {browser} B; total {jar_bytes + record + browser} B")

    print("\nsession flush (one changed cookie + counts + pool read back; median / p95)")
    for pool in (0, 10):
        f50, f95 = quantiles(await bench_flush(client, pool, rounds))
        print(f"  pool size {pool:>2}: {f50:.3f} / {f95:.3f} ms per flush")
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="statecrawl-bench-"))
    proc, port = start_redis(tmp)
    try:
        asyncio.run(run(port, args.rounds))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
