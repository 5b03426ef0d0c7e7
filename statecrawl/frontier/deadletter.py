"""Poison in the shared store is quarantined, not fatal: the crawl's dead-letter list.

Anything a worker reads back from Redis -- a stored request, a cookie, a
browser storage state, ``spider.state``, an item -- may be unreadable: written
by a buggy or older version, cut short, or crafted by someone who can write
to that Redis. One such entry must cost that entry only, never the crawl. So
whichever component fails to rebuild one:

* drops it and goes on with the rest,
* logs it once (at ERROR, naming what and why),
* counts it in the crawl's stats (``quarantined`` and
  ``quarantined_<kind>``), and
* moves it to the crawl's dead-letter list ``sc:{id}:dead`` (newest last,
  capped at :data:`DEAD_LETTER_MAX` entries), where ``statecrawl status``
  shows it.

A dead letter is JSON: ``kind`` (:data:`KINDS`), ``ref`` (the request id,
cookie field, item key, ...), ``error`` (why it was refused), ``at`` (unix
seconds, Redis clock for requests, the worker's clock otherwise), ``worker``
and ``data`` (the first :data:`DATA_MAX` bytes of the stored value, as Redis
had it: a sealed cookie stays sealed). Nothing in a dead letter is ever
executed or fed back into the crawl.

Stored requests are quarantined by ``quarantine.lua`` in one atomic step with
the removal of their lease (:meth:`statecrawl.frontier.store.CrawlStore.quarantine`);
session values by ``quarantine_field.lua``, only if they still hold the bad
value. Both push, trim and count through ``dead_letter.lua``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from statecrawl.frontier.serialize import dumps, loads

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from statecrawl.frontier.keys import CrawlKeys

__all__ = ["DATA_MAX", "DEAD_LETTER_MAX", "KINDS", "dead_letter", "read_dead_letters"]

#: Entries kept in ``sc:{id}:dead``; older ones are trimmed.
DEAD_LETTER_MAX = 1000
#: Bytes of the stored value kept in a dead letter.
DATA_MAX = 2048
#: What can be quarantined.
KINDS = ("request", "cookie", "storage_state", "spider_state", "item")


def _preview(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    return data[:DATA_MAX].decode("utf-8", "replace")


def dead_letter(kind: str, ref: str, error: str, raw: bytes | str | None, worker: str) -> bytes:
    """The JSON of one dead letter."""
    if kind not in KINDS:
        raise ValueError(f"unknown dead-letter kind {kind!r}")
    return dumps({"kind": kind, "ref": str(ref)[:512], "error": str(error)[:1024],
                  "at": round(time.time(), 3), "worker": worker, "data": _preview(raw)},
                 "dead letter")


async def read_dead_letters(client: Redis, keys: CrawlKeys, count: int = 10) -> list[dict[str, Any]]:
    """The newest *count* dead letters, newest first (unreadable ones as ``{"error": ...}``)."""
    raw = await client.lrange(keys.dead, -count, -1) if count > 0 else []
    out: list[dict[str, Any]] = []
    for entry in reversed(raw):
        try:
            # a request's data is cut at a byte count, maybe inside a UTF-8 sequence
            text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else entry
            value = loads(text, "dead letter")
        except Exception as exc:  # noqa: BLE001 - a dead letter must never stop a status
            value = {"error": f"unreadable dead letter: {exc}"}
        out.append(value if isinstance(value, dict) else {"error": "unreadable dead letter"})
    return out
