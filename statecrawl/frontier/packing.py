"""How a queued request is stored: compact JSON, compressed with the crawl's own dictionary.

Redis holds every queued request, so its bytes per request decide how big a
frontier fits in memory. A request is stored as one *packed value*::

    <marker byte> <host> NUL <payload>

* ``host`` -- the URL's lowercase hostname in clear, so a Lua script can sort
  the request by host (``lua/polite.lua``) without decoding it; empty for the
  crawl's *home* host, the host of meta ``start_url`` (which never changes
  once set), which most requests of a one-site crawl have;
* ``payload`` -- the request's *compact JSON*
  (:func:`~statecrawl.frontier.serialize.request_to_json` with ``compact``:
  fields equal to their defaults left out, no ``v``), as the marker says:

  ====== =======================================================================
  marker payload
  ====== =======================================================================
  0x01   the compact JSON itself
  0x02   zstd (magicless frame, no checksum) of it, no dictionary
  0x03   zstd of it with the crawl's dictionary (key ``zdict``)
  ====== =======================================================================

A value that starts with ``{`` is a request stored as full JSON (versions
before packing, and the API's service requests): it still loads.

**The dictionary.** Requests of one crawl are alike (one host, the same
callbacks and meta, URLs sharing their paths), so zstd with a dictionary
trained on the crawl's own first requests (``zstd --train``; their raw
bytes where training fails) shrinks each one to a few dozen bytes. The first
worker to have enqueued :data:`DICT_SAMPLES` requests proposes a dictionary
(``SET NX`` of the crawl's ``zdict`` key: the first proposal wins, and a crawl's
dictionary never changes) and every worker adopts the winner;
until then requests go out with marker 0x01 or 0x02. A worker that leases a
0x03 request before it has the dictionary reads it first.

Reading a value back trusts nothing: the dictionary and frames are data
(never code), a frame may declare at most
:data:`~statecrawl.frontier.serialize.MAX_REQUEST_BYTES`, and anything
malformed is a :class:`~statecrawl.exceptions.SerializationError` (the
request is quarantined).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import zstandard

from statecrawl.exceptions import SerializationError
from statecrawl.frontier.serialize import MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from statecrawl.frontier.keys import CrawlKeys

__all__ = ["DICT_BYTES", "DICT_SAMPLES", "RequestCodec", "host_of_url"]

PLAIN, ZSTD, ZSTD_DICT = 1, 2, 3
#: Requests a worker enqueues before it proposes the crawl's dictionary.
DICT_SAMPLES = 500
#: The dictionary's size.
DICT_BYTES = 8192
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS


def host_of_url(url: str) -> str:
    """The URL's hostname, lowercase, as ``lua/polite.lua`` reads it ('' when none)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _params() -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        3, format=_FORMAT, write_checksum=0, write_content_size=1, write_dict_id=0)


class RequestCodec:
    """Packs and unpacks the stored requests of one crawl (see the module docstring).

    No I/O but in :meth:`sync`, which a worker calls before each commit (it
    proposes or fetches the dictionary once, then costs nothing).
    """

    def __init__(self, dictionary: bytes | None = None, home: str | None = None) -> None:
        self._plain = zstandard.ZstdCompressor(compression_params=_params())
        self._dict: bytes | None = None
        self._with_dict: zstandard.ZstdCompressor | None = None
        self._unpack_dict: zstandard.ZstdDecompressor | None = None
        self._unpack_plain = zstandard.ZstdDecompressor(format=_FORMAT)
        self._samples: list[bytes] = []
        #: the crawl's home host (its requests are stored with an empty host); None: unknown
        self.home = home
        if dictionary:
            self.adopt(dictionary)

    @property
    def dictionary(self) -> bytes | None:
        return self._dict

    def adopt(self, dictionary: bytes) -> None:
        """Use *dictionary* (the crawl's: trained, or raw content) from now on."""
        zdict = zstandard.ZstdCompressionDict(dictionary)
        self._with_dict = zstandard.ZstdCompressor(dict_data=zdict, compression_params=_params())
        self._unpack_dict = zstandard.ZstdDecompressor(dict_data=zdict, format=_FORMAT)
        self._dict = dictionary
        self._samples.clear()

    # -- writing --------------------------------------------------------------

    def pack(self, compact_json: bytes, url: str, host: str | None = None) -> bytes:
        """The stored value of a request whose compact JSON is *compact_json* (*host*: the
        URL's, :func:`host_of_url`, when the caller has it already)."""
        name = host_of_url(url) if host is None else host
        host = b"\x00" if name == self.home else name.encode("ascii", "replace") + b"\x00"
        if self._with_dict is not None:
            return bytes((ZSTD_DICT,)) + host + self._with_dict.compress(compact_json)
        if len(self._samples) < DICT_SAMPLES:
            self._samples.append(compact_json)
        packed = self._plain.compress(compact_json)
        if len(packed) < len(compact_json):
            return bytes((ZSTD,)) + host + packed
        return bytes((PLAIN,)) + host + compact_json

    def ready(self) -> bool:
        """Has this worker enough requests to propose the crawl's dictionary?"""
        return self._dict is None and len(self._samples) >= DICT_SAMPLES

    def proposal(self) -> bytes | None:
        """A dictionary trained on this worker's first requests, once it has enough of them."""
        if not self.ready():
            return None
        samples = list(self._samples)
        try:
            return bytes(zstandard.train_dictionary(DICT_BYTES, samples).as_bytes())
        except zstandard.ZstdError:  # too few, or too alike: their raw bytes, newest last
            return b"".join(samples)[-DICT_BYTES:]

    async def sync(self, client: Redis, keys: CrawlKeys) -> None:
        """Propose this worker's dictionary if it has one ready, and adopt the crawl's."""
        if not self.ready():
            return
        proposal = await asyncio.to_thread(self.proposal)  # ~20 ms of training, once
        if proposal is None:
            return
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(keys.zdict, proposal, nx=True)
            pipe.get(keys.zdict)
            _, stored = await pipe.execute()
        if stored:
            self.adopt(bytes(stored))

    async def load(self, client: Redis, keys: CrawlKeys) -> bool:
        """Read the crawl's dictionary and home host; True if it has a dictionary."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(keys.zdict)
            pipe.hget(keys.meta, "start_url")
            stored, start_url = await pipe.execute()
        if start_url:
            self.home = host_of_url(start_url.decode() if isinstance(start_url, bytes)
                                    else start_url)
        if stored and self._dict is None:
            self.adopt(bytes(stored))
        return self._dict is not None

    # -- reading --------------------------------------------------------------

    def needs_dictionary(self, value: bytes) -> bool:
        """Is *value* compressed with the crawl's dictionary, which this worker lacks?"""
        return self._dict is None and value[:1] == bytes((ZSTD_DICT,))

    def preview(self, value: bytes) -> bytes:
        """What a dead letter shows of a stored value: its JSON when it unpacks, else the
        value with its bytes escaped (a packed value is binary)."""
        try:
            return self.unpack(value)
        except SerializationError:
            return repr(value[:2048]).encode()

    def unpack(self, value: bytes) -> bytes:
        """The JSON of a stored value (full JSON is returned as it is)."""
        if value[:1] == b"{":
            return value
        marker = value[0] if value else 0
        end = value.find(b"\x00")
        if marker not in (PLAIN, ZSTD, ZSTD_DICT) or end < 0:
            raise SerializationError("request: unknown stored format")
        payload = value[end + 1:]
        if marker == PLAIN:
            return payload
        unpacker = self._unpack_plain if marker == ZSTD else self._unpack_dict
        if unpacker is None:
            raise SerializationError(
                "request: compressed with a dictionary the crawl does not have")
        try:
            size = zstandard.get_frame_parameters(payload, format=_FORMAT).content_size
            if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
                raise SerializationError("request: stored data does not decompress: a frame "
                                         "without its size")
            if not 0 < size <= MAX_REQUEST_BYTES:
                raise SerializationError(f"request: a compressed frame of {size} bytes")
            return unpacker.decompress(payload)
        except zstandard.ZstdError as exc:
            raise SerializationError(f"request: stored data does not decompress: {exc}") from None
