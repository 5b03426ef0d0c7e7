"""The browser's guard: a local SOCKS5 proxy every Chromium connection goes through.

Why a proxy, and why SOCKS5
---------------------------
Chromium resolves names and connects on its own: no Scrapy resolver sees
what a rendered page fetches (its document, redirects, scripts, ``fetch``,
frames, WebSockets). Checking URLs in a Playwright route handler cannot be
made safe: the handler would resolve a name, and Chromium resolve it again
to connect (a rebinding name answers differently the second time), and
WebSockets never reach a route handler. So, with ``STATECRAWL_NET_GUARD``
on, Chromium is launched with ``--proxy-server=socks5://127.0.0.1:<port>``
pointing at :class:`GuardProxy`, in this process. With a SOCKS5 proxy
Chromium sends every TCP connection of every scheme (http, https, ws, wss)
to the proxy *with the host name unresolved*; the proxy resolves it, judges
every address with :func:`statecrawl.net.addresses.judge` (the HTTP path's
policy and ``STATECRAWL_NET_ALLOW``), and connects only to an address it
judged -- there is no second lookup to fool. A refused connection gets SOCKS
reply 2 (not allowed by ruleset): Chromium fails that one resource (a main
document fails with ``net::ERR_SOCKS_CONNECTION_FAILED``, which
:class:`~statecrawl.net.middleware.NetGuardMiddleware` reports as
``AddressRefused``). SOCKS rather than an HTTP proxy: the proxy only ever
pipes bytes (no HTTP parsing, keep-alive and HTTP/2 unchanged), and a target
that is down fails like a direct connection would (a network error, not a
502 page from the proxy).

Flags that close the other ways out (:data:`CHROMIUM_GUARD_ARGS`):
``--proxy-bypass-list=<-loopback>`` (Chromium sends loopback direct by
default), ``--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1``
(nothing in Chromium resolves a name itself, DNS prefetching included),
``--force-webrtc-ip-handling-policy=disable_non_proxied_udp`` (WebRTC sends
no UDP of its own) and ``--disable-quic``.

Pages in a context with its own proxy (``STATECRAWL_PROXIES`` through
browser sessions) connect to that proxy, not to this one: for each such
upstream proxy a *relay* listener on 127.0.0.1 connects to the upstream's
judged address and pipes bytes, so the proxy is checked at connect time as
on the HTTP path and its target is the proxy's business.

The proxy runs in a daemon thread with its own event loop: its port must be
known before scrapy-playwright reads its launch options (when the crawler is
built, before the reactor runs), and relaying bytes must not wait behind a
busy reactor. One per process (:func:`shared_proxy`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy.settings import SETTINGS_PRIORITIES

from statecrawl.exceptions import ConfigError
from statecrawl.net.addresses import Allowlist, Refusal, judge, normalize_host
from statecrawl.net.resolver import GUARD_SETTING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = ["BYPASS", "CHROMIUM_GUARD_ARGS", "GuardProxy", "running_proxy", "shared_proxy",
           "use_guarded_browser"]

logger = logging.getLogger(__name__)

#: Chromium flags that leave the proxy the only way out (see the module docstring).
CHROMIUM_GUARD_ARGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-quic",
)
#: The bypass list given with the proxy: nothing bypasses it, loopback included.
BYPASS = "<-loopback>"

_CHUNK = 65536
_REMEMBERED = 4096  # hosts whose last refusal is kept for refusal_for()
# SOCKS5 reply codes (RFC 1928)
_OK, _FAILURE, _NOT_ALLOWED, _HOST_UNREACHABLE, _REFUSED, _BAD_COMMAND, _BAD_ADDRESS = 0, 1, 2, 4, 5, 7, 8

GetAddrInfo = Callable[..., Any]


class GuardProxy:
    """A SOCKS5 proxy (CONNECT only, no authentication) that connects only to judged addresses.

    ``start()`` binds 127.0.0.1 on an ephemeral port and serves from its
    own thread; :attr:`server` is what Chromium's ``--proxy-server`` gets.
    *getaddrinfo* (default :func:`socket.getaddrinfo`, run in a thread) is
    how names are resolved.
    """

    def __init__(self, allow: Allowlist, *, connect_timeout: float = 30.0,
                 getaddrinfo: GetAddrInfo | None = None) -> None:
        self.allow = allow
        self.connect_timeout = connect_timeout
        self._getaddrinfo = getaddrinfo or socket.getaddrinfo
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._relays: dict[tuple[str, int], int] = {}  # upstream (host, port) -> relay port
        self._lock = threading.Lock()
        self._refusals: OrderedDict[str, Refusal] = OrderedDict()
        self._listeners: list[Callable[[Refusal], None]] = []
        self.port = 0
        self.refused = 0  # connections refused since start (all threads read it)

    @property
    def server(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    # -- lifecycle (any thread) ---------------------------------------------------------

    def start(self) -> GuardProxy:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="statecrawl-net-guard-proxy",
                                        daemon=True)
        self._thread.start()
        self.port = self._listen(self._socks)
        logger.debug("net guard proxy for the browser on %s", self.server)
        return self

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return
        async def stop() -> None:
            for server in self._servers:
                server.close()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def relay_for(self, host: str, port: int) -> int:
        """The port of the relay to the upstream proxy *host*:*port* (started on first use)."""
        key = (normalize_host(host), port)
        with self._lock:
            relay = self._relays.get(key)
        if relay is None:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._relay(reader, writer, key[0], port)
            relay = self._listen(handle)
            with self._lock:
                relay = self._relays.setdefault(key, relay)
        return relay

    def relay_ports(self) -> set[int]:
        with self._lock:
            return set(self._relays.values())

    def _listen(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> int:
        assert self._loop is not None, "start() the proxy first"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])

        async def serve() -> None:
            self._servers.append(await asyncio.start_server(handler, sock=sock, limit=_CHUNK))

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return port

    # -- refusals (read from any thread) ------------------------------------------------

    def subscribe(self, listener: Callable[[Refusal], None]) -> Callable[[], None]:
        """Call *listener* (in the proxy's thread) with each refusal; returns the unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def refusal_for(self, host: str) -> Refusal | None:
        """Why the last connection to *host* was refused; None if it was not, or one since was made."""
        with self._lock:
            return self._refusals.get(normalize_host(host))

    def _note(self, host: str, refusal: Refusal | None) -> None:
        key = normalize_host(host)
        with self._lock:
            if refusal is None:
                self._refusals.pop(key, None)
                return
            self.refused += 1
            self._refusals[key] = refusal
            self._refusals.move_to_end(key)
            while len(self._refusals) > _REMEMBERED:
                self._refusals.popitem(last=False)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(refusal)
            except Exception:  # noqa: BLE001 - a listener must not break the proxy
                logger.exception("net guard proxy: a refusal listener failed")

    # -- connections (the proxy's thread) -----------------------------------------------

    async def _open(self, host: str, port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | int:
        """A connection to *host*:*port* through the check, or the SOCKS reply code of the failure."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.run_in_executor(
                None, lambda: self._getaddrinfo(host, port, 0, socket.SOCK_STREAM)),
                self.connect_timeout)
        except (OSError, UnicodeError, asyncio.TimeoutError):
            return _HOST_UNREACHABLE
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refusal = judge(host, addresses, self.allow)
        self._note(host, refusal)
        if refusal is not None:
            return _NOT_ALLOWED
        code = _HOST_UNREACHABLE
        for address in addresses:  # only the addresses judged above: no second lookup
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=_CHUNK), self.connect_timeout)
            except ConnectionRefusedError:
                code = _REFUSED
            except (OSError, asyncio.TimeoutError):
                pass
        return code

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        try:
            greeting = await reader.readexactly(2)
            methods = await reader.readexactly(greeting[1])
            if greeting[0] != 5 or 0 not in methods:
                writer.write(b"\x05\xff")
                return
            writer.write(b"\x05\x00")
            version, command, _, kind = await reader.readexactly(4)
            host = await _read_address(reader, kind)
            port = struct.unpack("!H", await reader.readexactly(2))[0]
            if version != 5 or command != 1 or host is None:
                writer.write(_reply(_BAD_ADDRESS if host is None else _BAD_COMMAND))
                return
            opened = await self._open(host, port)
            if isinstance(opened, int):
                writer.write(_reply(opened))
                return
            upstream = opened
            writer.write(_reply(_OK))
            await _splice(reader, writer, *upstream)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            _close(writer)
            if upstream is not None:
                _close(upstream[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     host: str, port: int) -> None:
        upstream = None
        try:
            opened = await self._open(host, port)
            if not isinstance(opened, int):
                upstream = opened
                await _splice(reader, writer, *upstream)
        except (ConnectionError, OSError):
            pass
        finally:
            _close(writer)
            if upstream is not None:
                _close(upstream[1])


async def _read_address(reader: asyncio.StreamReader, kind: int) -> str | None:
    if kind == 1:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if kind == 4:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if kind == 3:
        name = await reader.readexactly((await reader.readexactly(1))[0])
        try:
            return name.decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def _reply(code: int) -> bytes:
    return bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Pipe both ways until one side is done (neither Chromium nor TLS half-closes)."""
    tasks = {asyncio.ensure_future(_pipe(reader, up_writer)),
             asyncio.ensure_future(_pipe(up_reader, writer))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # let what the other side already sent go out (a response after the request ended)
        await asyncio.wait(tasks, timeout=0.05)
    finally:
        for task in tasks:
            task.cancel()


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


_shared: GuardProxy | None = None
_shared_lock = threading.Lock()


def running_proxy() -> GuardProxy | None:
    """This process's browser guard proxy, None if none was started."""
    return _shared


def shared_proxy(allow: Allowlist, **kwargs: Any) -> GuardProxy:
    """This process's proxy, started with *allow* on first use.

    One per process, like the guarded resolver: a later call with another
    allowlist gets the running proxy and a warning (the first one applies).
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GuardProxy(allow, **kwargs).start()
        elif _shared.allow != allow:
            logger.warning("STATECRAWL_NET_ALLOW differs between crawlers of this process (%s, %s): "
                           "the browser's guard uses the first", _shared.allow, allow)
        return _shared


def use_guarded_browser(settings: BaseSettings) -> None:
    """With ``STATECRAWL_NET_GUARD`` on, launch Chromium behind this process's :class:`GuardProxy`.

    Called from the add-on's ``update_settings``, after it set
    ``PLAYWRIGHT_LAUNCH_OPTIONS``: adds the proxy and
    :data:`CHROMIUM_GUARD_ARGS` to whatever launch options apply (a
    project's own included), at a priority the project's value does not
    override. A browser the guard cannot put behind the proxy is refused with
    a ConfigError rather than run unguarded: a remote browser
    (``PLAYWRIGHT_CDP_URL``, ``PLAYWRIGHT_CONNECT_URL``), another browser
    type than Chromium, a proxy in the launch options or in
    ``PLAYWRIGHT_CONTEXTS`` (use ``STATECRAWL_PROXIES``: those are relayed).
    """
    if not settings.getbool(GUARD_SETTING):
        return
    for name in ("PLAYWRIGHT_CDP_URL", "PLAYWRIGHT_CONNECT_URL"):
        if settings.get(name):
            raise ConfigError(f"{GUARD_SETTING} cannot check the connections of a remote browser "
                              f"({name}): unset it, or turn the guard off")
    kind = settings.get("PLAYWRIGHT_BROWSER_TYPE") or "chromium"
    if kind != "chromium":
        raise ConfigError(f"{GUARD_SETTING} guards Chromium only, not PLAYWRIGHT_BROWSER_TYPE={kind!r}")
    options = dict(settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS"))
    contexts = settings.getdict("PLAYWRIGHT_CONTEXTS")
    if options.get("proxy") or any(isinstance(c, dict) and c.get("proxy") for c in contexts.values()):
        raise ConfigError(f"{GUARD_SETTING} puts the browser behind its own proxy: set proxies with "
                          "STATECRAWL_PROXIES (relayed through the guard), not in "
                          "PLAYWRIGHT_LAUNCH_OPTIONS or PLAYWRIGHT_CONTEXTS")
    timeout = settings.getfloat("STATECRAWL_RENDER_TIMEOUT", 30.0)
    proxy = shared_proxy(Allowlist.from_settings(settings), connect_timeout=timeout)
    options["proxy"] = {"server": proxy.server, "bypass": BYPASS}
    args = [a for a in options.get("args") or () if not str(a).startswith(_OWN_FLAGS)]
    options["args"] = [*args, *CHROMIUM_GUARD_ARGS]
    name = "PLAYWRIGHT_LAUNCH_OPTIONS"
    settings.set(name, options, max(SETTINGS_PRIORITIES["addon"], settings.getpriority(name) or 0))


#: Flags the guard sets: a project's own value of one is replaced, not kept beside it.
_OWN_FLAGS = ("--proxy-server", "--proxy-bypass-list", "--proxy-pac-url", "--no-proxy-server",
              "--host-resolver-rules", "--force-webrtc-ip-handling-policy", "--disable-quic")
