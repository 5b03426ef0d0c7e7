"""Where a sharded crawl's shards live: one hash tag per shard, spread over the slots.

Redis Cluster gives each master contiguous ranges of its 16,384 slots (``redis-cli
--cluster create`` splits them evenly; managed services do the same). A shard's tag
hashed at random would put several shards on one master and none on another (with 3
shards and 3 masters, all three land on different masters only 2 times in 9), so
the slot space is cut in *n* equal slices and each shard takes one: shard 0 is the
crawl's own tag, ``<id>``, in whichever slice its slot falls; shards 1..n-1 take the
other slices in order, each the first tag ``<id>~<s>.<k>`` (k = 0, 1, ...) whose slot
lies in its slice. The shards fall on the masters evenly, whatever the crawl id.
Every worker finds the same tags (a pure function of the id, *s* and *n*, cached).
"""

from __future__ import annotations

import functools

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["shard_tag"]


@functools.lru_cache(maxsize=65536)
def shard_tag(crawl_id: str, shard: int, shards: int) -> str:
    """The hash tag of shard *shard* (> 0) of *shards* (module docstring)."""
    home = key_slot(crawl_id.encode()) * shards // REDIS_CLUSTER_HASH_SLOTS  # shard 0's slice
    piece = shard - 1 if shard - 1 < home else shard
    low = piece * REDIS_CLUSTER_HASH_SLOTS // shards
    high = (piece + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    for salt in range(1_000_000):  # a slice of >= 16 slots: found within ~1,000 tries
        tag = f"{crawl_id}~{shard}.{salt}"
        if low <= key_slot(tag.encode()) < high:
            return tag
    raise AssertionError(f"no tag of shard {shard} of {shards} in its slots")  # pragma: no cover
