"""Items at rest: zstd frames with a shipped dictionary, and the JSON of older versions.

An item's JSON is stored as one zstd frame made with the dictionary
``data/items-<id>.zdict`` (110 KiB), trained on page items of the WCXB
benchmark (``bench/train_item_dict.py``), at level ``STATECRAWL_ITEMS_ZSTD_LEVEL``
(:data:`LEVEL`). On the 181 scrapinghub article pages crawled by
``bench/redis_memory.py`` (17,522 B of item JSON on average), per item:
zlib-9 5,182 B (3.38x), zstd-15 without a dictionary 5,028 B (3.48x); with the dictionary
level 9 gives 4,525 B (3.87x, 0.45 ms), level 15 4,322 B (4.05x, 2.8 ms),
level 19 4,306 B (3.5 ms). Level 15 is the default: it is what brings an item
kept in Redis under a quarter of a 19.8 KB page once the allocator has rounded
it (4,884 B of ``MEMORY USAGE`` per page against 5,140 at level 9); the
pipeline compresses on a thread (zstd releases the GIL), never on the reactor.

Reading tells the two apart by the first bytes: a zstd frame starts with the
magic ``28 b5 2f fd``, an item of an older version with ``{`` (JSON); anything
else is refused. A frame names the dictionary it was made with, so a later
dictionary (a new id) still opens the items of this one. Decompression stops
at :data:`MAX_BYTES`: a frame written by someone who can write to Redis
cannot make a reader allocate more.
"""

from __future__ import annotations

import functools
import io
import threading
from importlib import resources
from typing import Any

import zstandard

from statecrawl.frontier.serialize import loads

__all__ = ["DICT_ID", "LEVEL", "MAX_BYTES", "ZSTD_MAGIC", "load_item", "pack_item", "unpack_item"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The dictionary new items are compressed with, and the level.
DICT_ID = 1
LEVEL = 15
#: Largest item a frame may open to (``STATECRAWL_MAX_ITEM_BYTES``' default).
MAX_BYTES = 32 * 1024 * 1024


@functools.lru_cache(maxsize=None)
def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    data = resources.files("statecrawl.frontier").joinpath("data", f"items-{dict_id}.zdict")
    try:
        raw = data.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"the item was compressed with dictionary {dict_id}, which this "
                         "version of statecrawl does not have") from None
    return zstandard.ZstdCompressionDict(raw)


_local = threading.local()  # a ZstdCompressor must not be shared between threads


def pack_item(body: bytes, level: int = LEVEL) -> bytes:
    """The stored form of an item's JSON *body* (one zstd frame). Any thread may call it
    (zstd releases the GIL while it compresses)."""
    compressors = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        if not 1 <= level <= 22:
            raise ValueError(f"a zstd level is 1 to 22, got {level}")
        compressor = compressors[level] = zstandard.ZstdCompressor(
            level=level, dict_data=_dictionary(DICT_ID))
    return compressor.compress(body)


def unpack_item(raw: bytes) -> bytes:
    """The JSON of a stored item, compressed or not (anything but a zstd frame is taken for
    JSON: the JSON decoder judges it); ValueError for a broken frame."""
    if raw[:4] != ZSTD_MAGIC:
        return raw
    try:
        params = zstandard.get_frame_parameters(raw)
        dict_id = params.dict_id
        decompressor = zstandard.ZstdDecompressor(
            dict_data=_dictionary(dict_id) if dict_id else None)
        chunks, size = [], 0
        with decompressor.stream_reader(io.BytesIO(raw), read_across_frames=False) as reader:
            while size <= MAX_BYTES and (chunk := reader.read(1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
    except zstandard.ZstdError as exc:
        raise ValueError(f"a broken zstd frame: {exc}") from None
    if size > MAX_BYTES:
        raise ValueError(f"the frame opens to more than {MAX_BYTES} bytes")
    out = b"".join(chunks)
    if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, len(out)):
        raise ValueError("a zstd frame cut short")
    return out


def load_item(raw: bytes) -> Any:
    """A stored item decoded (:func:`unpack_item`, then JSON)."""
    return loads(unpack_item(raw), "item")
