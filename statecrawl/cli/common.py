"""What the ``statecrawl`` commands share: finding Redis, opening a crawl, and a terminal that may go away.

A terminal that is gone (EIO, after a hangup) or a closed pipe never turns
into a traceback: :func:`tolerant_stdio` drops output to it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, TextIO

from statecrawl.exceptions import ConfigError, StatecrawlError
from statecrawl.frontier.connection import (
    connect,
    redact_url,
    redis_url_from_settings,
    resolve_redis_url,
)
from statecrawl.frontier.keys import validate_crawl_id
from statecrawl.frontier.store import CrawlStore

__all__ = ["check_bind", "error", "is_loopback", "one_line", "open_store", "redis_url", "say",
           "tolerant_stdio", "uses_embedded"]

#: errno values of a terminal or pipe that is gone.
_GONE = frozenset({errno.EIO, errno.EPIPE, errno.ENXIO})


def redis_url(args: argparse.Namespace) -> str:
    settings = {"STATECRAWL_REDIS_URL": args.redis_url} if args.redis_url else {}
    return resolve_redis_url(settings, args.data_dir)


def uses_embedded(args: argparse.Namespace) -> bool:
    """True when no Redis URL is configured, so the embedded Redis of --data-dir is used."""
    settings = {"STATECRAWL_REDIS_URL": args.redis_url} if args.redis_url else {}
    return redis_url_from_settings(settings) is None


class _TolerantStream:
    """A stdout/stderr that survives its terminal: EIO/EPIPE drop the output, not the CLI.

    Each write is flushed, so nothing is left buffered for the interpreter to
    fail on at exit; once the stream is gone its descriptor points at
    /dev/null for the same reason.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
                self._stream.flush()
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._lost(exc)

    def isatty(self) -> bool:
        try:
            return not self.gone and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _lost(self, exc: OSError) -> None:
        if exc.errno not in _GONE:
            raise exc
        self.gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)


@contextlib.contextmanager
def tolerant_stdio() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = _TolerantStream(saved[0])  # type: ignore[assignment]
    sys.stderr = _TolerantStream(saved[1])  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.asynccontextmanager
async def open_store(
    args: argparse.Namespace, crawl_id: str, *, must_exist: bool = True, url: str | None = None
) -> AsyncIterator[CrawlStore]:
    validate_crawl_id(crawl_id)
    url = url or redis_url(args)
    client = await connect(url, name="statecrawl:cli")
    try:
        store = CrawlStore(client, crawl_id)
        if must_exist and not await store.exists():
            raise StatecrawlError(
                f"no crawl {crawl_id!r} in Redis at {redact_url(url)} "
                "('statecrawl list' shows the crawls there)"
            )
        yield store
    finally:
        await client.aclose()


def say(text: str) -> None:
    print(f"statecrawl: {text}", file=sys.stderr, flush=True)


def error(message: object) -> None:
    print(f"statecrawl: error: {message}", file=sys.stderr, flush=True)


def one_line(value: Any, width: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def is_loopback(host: str) -> bool:
    """Whether *host* (a name or an address to listen on) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, *, option: str, hint: str) -> None:
    """Bind and release *host*:*port* as uvicorn will (SO_REUSEADDR), so a bad address or a
    taken port is one clear line instead of a server's log. *option* names the flag that
    gave the address, *hint* what to do about a port in use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{option} {host!r}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            why = ("the address is already in use" if exc.errno == errno.EADDRINUSE
                   else exc.strerror or str(exc))
            raise StatecrawlError(f"cannot listen on {host}:{port}: {why}; {hint}") from None
