"""What one commit carries, and what it answers: the values a worker batches for
``commit.lua`` (:meth:`statecrawl.frontier.store.CrawlStore.commit`).

A :class:`PendingRequest` is a request packed for the frontier with its fingerprint;
a :class:`PendingItem` an item packed for the ``items`` hash (or only its key, when a
sink holds it); :class:`CommitResult` the script's reply. Items are stored under
:func:`item_key`; one that cannot be stored is replaced by a small error item
(:func:`error_item`) that keeps its identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.item_codec import load_item, pack_item
from statecrawl.frontier.serialize import dumps

__all__ = [
    "CommitResult", "PendingItem", "PendingRequest", "commit_result", "error_item",
    "error_item_data", "item_key", "reply_bytes", "reply_text",
]

@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request ready to be committed to the frontier."""

    fingerprint: bytes
    filter: bool  # False for dont_filter requests
    score: int  # -priority
    body: bytes  # request JSON
    counted: bool = True  # counts against the crawl's limit (not robots.txt, sitemaps, retries)
    record: bool = False  # not deduplicated, but recorded as seen (a pushed start URL)
    host: str = ""  # the URL's hostname: a crawl sharded by host routes on it (shards.py)

    @property
    def flags(self) -> int:
        """commit.lua's flags: 1 = deduplicate, 2 = not counted against the limit, 4 = record."""
        return (1 if self.filter else 0) | (0 if self.counted else 2) | (4 if self.record else 0)


@dataclass(frozen=True, slots=True)
class PendingItem:
    key: str
    failed: bool
    body: bytes  # the stored item (item_codec.pack_item); empty when a sink holds it
    in_sink: bool = False  # written to the crawl's sink: Redis counts its key only


@dataclass(frozen=True, slots=True)
class CommitResult:
    enqueued: int
    duplicates: int
    limit_dropped: int
    acked: int
    leased: tuple[tuple[str, bytes], ...] = ()  # (lease id, request JSON), when asked to lease
    spare: int = 0  # of a grant (a sharded crawl's limit: shards.py), the part not used



def reply_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reply_bytes(value: bytes | str) -> bytes:
    # results replayed from the tokens hash come back through cjson as str
    return value.encode() if isinstance(value, str) else value


def commit_result(out: Sequence[Any]) -> CommitResult:
    """The reply of the commit script (:meth:`CrawlStore.commit_call`) as a CommitResult."""
    leased = tuple((reply_text(out[i]), reply_bytes(out[i + 1])) for i in range(5, len(out), 2))
    return CommitResult(int(out[0]), int(out[1]), int(out[2]), int(out[3]), leased, int(out[4]))


def item_key(item: dict[str, Any], body: bytes) -> str:
    """The key an item is stored under: its ``url``, else a hash of its JSON."""
    url = item.get("url")
    if isinstance(url, str) and url:
        return url
    return "sha1:" + hashlib.sha1(body).hexdigest()


#: Fields an error item keeps of the item it stands for (all small).
_ERROR_ITEM_FIELDS = ("url", "final_url", "status", "content_type", "title", "depth", "renderer",
                      "crawl_id", "fetched_at")


def error_item_data(data: Mapping[str, Any], kind: str, message: str) -> dict[str, Any]:
    """A small stand-in for an item that cannot be stored: its identity, and an ``error``."""
    out = {k: data[k] for k in _ERROR_ITEM_FIELDS
           if k in data and (not isinstance(data[k], str) or len(data[k]) <= 8192)}
    out["error"] = {"type": kind, "message": message}
    return out


def error_item(item: PendingItem, kind: str, message: str) -> PendingItem:
    """:func:`error_item_data` for an item already packed (same key; a sink's item keeps
    its object and is counted failed)."""
    if item.in_sink:
        return PendingItem(item.key, True, b"", in_sink=True)
    try:
        data = load_item(item.body)
    except (SerializationError, ValueError):
        data = {}
    body = dumps(error_item_data(data if isinstance(data, dict) else {}, kind, message), "item")
    return PendingItem(item.key, True, pack_item(body))
