"""Where a crawl's items go: ``STATECRAWL_SINK``.

* ``redis`` (the default): in the crawl's ``items`` hash, compressed
  (:mod:`statecrawl.frontier.item_codec`), through the worker's group commit.
* a directory (``/data/items``, ``file:///data/items``): one file per item.
* ``s3://bucket/prefix``: one object per item, in any S3-compatible store
  (``STATECRAWL_S3_ENDPOINT_URL`` for one that is not AWS; credentials as
  botocore finds them: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN`` settings or environment, profiles, instance roles;
  region ``AWS_REGION_NAME`` or the environment's).

An item is written under a name made from its item key
(:func:`statecrawl.frontier.store.item_key`, the page's URL):
``<prefix>/<crawl id>/items/<SHA-1 of the key, hex>.json.zst``, its JSON
as one zstd frame (the same bytes Redis would keep; ``zstd -D`` with the
dictionary, or :func:`~statecrawl.frontier.item_codec.unpack_item`, opens
it). A page fetched again is written over its first copy, never beside it.
A file is written whole to a temporary name, synced and renamed; an S3 PUT is
whole or absent. Writes run on a thread pool (``STATECRAWL_SINK_THREADS``),
never on the reactor; :class:`SinkWriter` retries a failed write
``STATECRAWL_SINK_RETRIES`` times with backoff and then raises
:class:`SinkError` (the page is given back, not acknowledged:
:mod:`statecrawl.output.pipelines`).

An unknown scheme, an S3 URL without a bucket, a relative ``file:`` URL are
:class:`~statecrawl.exceptions.ConfigError` at start; so is a bucket or
directory the worker cannot reach (checked before it leases anything).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from statecrawl.exceptions import ConfigError

__all__ = [
    "DirSink", "S3Sink", "Sink", "SinkError", "SinkSpec", "SinkWriter", "object_name",
    "open_sink", "parse_sink", "sink_setting",
]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HEX_NAME = re.compile(r"[0-9a-f]{40}\.json\.zst")


class SinkError(Exception):
    """An item could not be written to the sink (after the retries)."""


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``STATECRAWL_SINK``: ``kind`` is ``redis``, ``dir`` or ``s3``."""

    kind: str
    url: str  # as recorded in the crawl's meta: "redis", an absolute path, s3://bucket/prefix
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""


def sink_setting(settings: Any) -> str:
    """``STATECRAWL_SINK`` from Scrapy *settings*, else the environment, else ``redis``."""
    return str(settings.get("STATECRAWL_SINK") or os.environ.get("STATECRAWL_SINK") or "redis")


def parse_sink(value: str) -> SinkSpec:
    """Parse a sink URL (see the module docstring); ConfigError if it is not one."""
    value = value.strip()
    if value in ("", "redis"):
        return SinkSpec("redis", "redis")
    if "://" not in value:
        path = Path(value).expanduser().resolve()
        return SinkSpec("dir", str(path), path=path)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"STATECRAWL_SINK={value!r}: a file URL names an absolute local "
                              "path, file:///path")
        path = Path(unquote(parts.path)).resolve()
        return SinkSpec("dir", str(path), path=path)
    if scheme == "s3":
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not _BUCKET.fullmatch(bucket) or parts.query or parts.fragment:
            raise ConfigError(f"STATECRAWL_SINK={value!r}: expected s3://bucket/prefix with a "
                              "valid bucket name (3-63 of a-z 0-9 . -)")
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return SinkSpec("s3", url, bucket=bucket, prefix=prefix)
    raise ConfigError(f"STATECRAWL_SINK={value!r}: unknown sink scheme {scheme!r}; use redis, "
                      "a directory, file:///path or s3://bucket/prefix")


def object_name(crawl_id: str, key: str) -> str:
    """The name of item *key*'s object, below the sink's root or prefix."""
    return f"{crawl_id}/items/{hashlib.sha1(key.encode()).hexdigest()}.json.zst"


class Sink(Protocol):
    def check(self, crawl_id: str) -> None: ...
    def put(self, crawl_id: str, key: str, data: bytes) -> None: ...
    def get(self, crawl_id: str, key: str) -> bytes | None: ...
    def names(self, crawl_id: str) -> Iterator[str]: ...
    def read(self, name: str) -> bytes: ...


class DirSink:
    """Items as files under a directory: ``<root>/<crawl id>/items/<sha1>.json.zst``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def check(self, crawl_id: str) -> None:
        folder = self.root / crawl_id / "items"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"the item sink {self.root} is not writable: {exc}") from None

    def put(self, crawl_id: str, key: str, data: bytes) -> None:
        path = self.root / object_name(crawl_id, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a crash of the machine
        finally:
            os.close(fd)

    def get(self, crawl_id: str, key: str) -> bytes | None:
        try:
            return (self.root / object_name(crawl_id, key)).read_bytes()
        except FileNotFoundError:
            return None

    def names(self, crawl_id: str) -> Iterator[str]:
        folder = self.root / crawl_id / "items"
        if folder.is_dir():
            for entry in os.scandir(folder):
                if _HEX_NAME.fullmatch(entry.name):  # not temporary files of a write cut short
                    yield f"{crawl_id}/items/{entry.name}"

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class S3Sink:
    """Items as objects: ``s3://<bucket>/<prefix>/<crawl id>/items/<sha1>.json.zst``."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix, client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def check(self, crawl_id: str) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - botocore's errors: say which, at start
            raise ConfigError(f"the item sink s3://{self.bucket} cannot be reached: "
                              f"{type(exc).__name__}: {exc}") from None

    def put(self, crawl_id: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(object_name(crawl_id, key)),
                               Body=data, ContentType="application/zstd")

    def get(self, crawl_id: str, key: str) -> bytes | None:
        try:
            return self.read(object_name(crawl_id, key))
        except self.client.exceptions.NoSuchKey:
            return None

    def names(self, crawl_id: str) -> Iterator[str]:
        start = self._key(f"{crawl_id}/items/")
        cut = len(self._key(""))
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start):
            for entry in page.get("Contents", ()):
                if _HEX_NAME.fullmatch(entry["Key"][len(start):]):
                    yield entry["Key"][cut:]

    def read(self, name: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        with body:
            return bytes(body.read())


def _s3_client(settings: Any, threads: int) -> Any:
    import botocore.session  # only with an S3 sink
    from botocore.config import Config

    def get(name: str) -> str | None:
        return settings.get(name) or None

    session = botocore.session.get_session()
    endpoint = get("STATECRAWL_S3_ENDPOINT_URL") or get("AWS_ENDPOINT_URL") or os.environ.get(
        "STATECRAWL_S3_ENDPOINT_URL")
    config = Config(max_pool_connections=max(10, threads), connect_timeout=10, read_timeout=30,
                    retries={"max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint else None)
    return session.create_client(
        "s3", endpoint_url=endpoint, region_name=get("AWS_REGION_NAME") or os.environ.get(
            "AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
        aws_access_key_id=get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=get("AWS_SESSION_TOKEN"), config=config)


def open_sink(spec: SinkSpec, settings: Mapping[str, Any] | Any, threads: int = 8) -> Sink | None:
    """The sink *spec* names (no I/O), or None for ``redis``."""
    if spec.kind == "dir":
        assert spec.path is not None
        return DirSink(spec.path)
    if spec.kind == "s3":
        return S3Sink(spec.bucket, spec.prefix, _s3_client(settings, threads))
    return None


class SinkWriter:
    """Writes items to a sink from a thread pool, retrying failures with backoff."""

    def __init__(self, sink: Sink, crawl_id: str, *, threads: int, retries: int,
                 backoff: float = 0.2) -> None:
        self.sink, self.crawl_id = sink, crawl_id
        self.retries, self.backoff = retries, backoff
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    async def write(self, key: str, data: bytes) -> int:
        """Write item *key*; returns the attempts it took, or raises SinkError."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="statecrawl-sink")
        loop = asyncio.get_running_loop()
        delay = self.backoff
        for attempt in range(1, self.retries + 2):
            try:
                await loop.run_in_executor(self._pool, self.sink.put, self.crawl_id, key, data)
                return attempt
            except Exception as exc:  # noqa: BLE001 - OSError, botocore's: retried alike
                if attempt > self.retries:
                    raise SinkError(f"{type(exc).__name__}: {exc}"[:500]) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
