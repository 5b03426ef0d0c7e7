"""Which IP addresses a crawl may connect to: the address policy and the operator's allowlist.

:func:`refused_reason` judges one address and says why it is refused, or
``None`` for an address on the public internet. The tables below are
statecrawl's own, not :mod:`ipaddress`'s ``is_private`` / ``is_global``:
those changed meaning between Python releases, and a security check must
answer the same on every worker. Refused:

* IPv4: ``0.0.0.0/8`` (unspecified: Linux connects ``0.0.0.0`` to the host
  itself), loopback ``127.0.0.0/8``, private (RFC 1918), shared address
  space ``100.64.0.0/10`` (CGNAT; also cloud metadata such as
  ``100.100.100.200``), link-local ``169.254.0.0/16`` (with the metadata
  address ``169.254.169.254`` named as such), the IETF protocol block
  ``192.0.0.0/24``, documentation and benchmarking ranges, the retired 6to4
  relay ``192.88.99.0/24``, multicast, reserved ``240.0.0.0/4`` and the
  broadcast address.
* IPv6: everything outside global unicast ``2000::/3`` (unspecified ``::``,
  loopback ``::1``, unique local ``fc00::/7``, link-local ``fe80::/10``,
  multicast ``ff00::/8``, the discard prefix ...), except the prefixes that
  embed an IPv4 address; inside ``2000::/3`` documentation (``2001:db8::/32``,
  ``3fff::/20``), benchmarking (``2001:2::/48``) and ORCHID.
* IPv6 that carries an IPv4 address is judged as that IPv4 address:
  IPv4-mapped ``::ffff:a.b.c.d`` (a dual-stack socket connects to the IPv4
  address itself), IPv4-translated ``::ffff:0:a.b.c.d``, NAT64
  ``64:ff9b::/96``, 6to4 ``2002::/16`` and Teredo ``2001::/32`` (its
  client). The deprecated IPv4-compatible form ``::a.b.c.d`` and local-use
  NAT64 ``64:ff9b:1::/48`` are refused outright.

:class:`Allowlist` is what an operator lets through anyway
(``STATECRAWL_NET_ALLOW``): host names (exact, case-insensitive) and
networks or single addresses. An entry that is neither fails loudly with a
:class:`~statecrawl.exceptions.ConfigError` naming it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from statecrawl.exceptions import ConfigError

__all__ = [
    "ALLOW_SETTING", "Allowlist", "IPAddress", "Refusal", "embedded_ipv4", "judge", "normalize_host",
    "parse_ip", "refused_reason",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The setting an operator changes to let a refused host or network through (default: empty).
ALLOW_SETTING = "STATECRAWL_NET_ALLOW"


def _table(*rows: tuple[str, str]) -> tuple[tuple[_Network, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in rows)


# First match wins: the metadata address before link-local, broadcast before reserved.
_IPV4 = _table(
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("169.254.169.254/32", "the cloud metadata address (link-local)"),
    ("169.254.0.0/16", "link-local"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

_IPV6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private (local-use NAT64)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "reserved (ORCHID)"),
    ("2001:20::/28", "reserved (ORCHIDv2)"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private (site-local)"),
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, with the name of the form; None if none."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-translated"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip.teredo is not None:
        return ip.teredo[1], "Teredo"
    return None


def refused_reason(ip: IPAddress) -> str | None:
    """Why a crawler must not connect to *ip* (``"loopback"``, ...), or None if it may."""
    if isinstance(ip, ipaddress.IPv4Address):
        return next((reason for net, reason in _IPV4 if ip in net), None)
    if ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        inner, form = embedded
        reason = refused_reason(inner)
        return None if reason is None else f"{reason} ({form} {inner})"
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "reserved (deprecated IPv4-compatible)"
    reason = next((reason for net, reason in _IPV6 if ip in net), None)
    if reason is None and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return reason


def parse_ip(text: str) -> IPAddress | None:
    """*text* as an IP address (``[::1]`` and ``fe80::1%eth0`` included), None if it is not one."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """The form host names are compared in: lower case, no trailing dot, IDNA (punycode)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    if not host.isascii():
        try:
            return host.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return host


@dataclass(frozen=True)
class Refusal:
    """A connection refused: *host* (as requested) resolved to *address*, refused for *reason*."""

    host: str
    address: str
    reason: str

    def __str__(self) -> str:
        if parse_ip(self.host) is not None:
            where = f"{self.address} is"
        else:
            where = f"{self.host} resolves to {self.address}, which is"
        return f"refused: {where} {self.reason} ({ALLOW_SETTING} to allow)"


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


class Allowlist:
    """Hosts and networks the guard lets through although the address policy refuses them."""

    def __init__(self, hosts: Iterable[str] = (), networks: Iterable[_Network] = ()) -> None:
        self.hosts = frozenset(normalize_host(h) for h in hosts)
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """From ``STATECRAWL_NET_ALLOW``: ``["intranet.example", "10.1.0.0/16", "::1"]``.

        Raises ConfigError naming the first entry that is neither a host name
        nor an address or network (a URL, a port, a wildcard, host bits set).
        """
        hosts: list[str] = []
        networks: list[_Network] = []
        for raw in entries:
            entry = str(raw).strip()
            if not entry:
                continue
            network = _parse_network(entry)
            if network is not None:
                networks.append(network)
                continue
            host = normalize_host(entry)
            if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
                raise ConfigError(
                    f"{ALLOW_SETTING}: {entry!r} is neither a host name nor an IP address or "
                    "network (expected e.g. intranet.example, 10.0.0.0/8, 127.0.0.1 or ::1; "
                    "no scheme, port, path or wildcard)")
            hosts.append(host)
        return cls(hosts, networks)

    @classmethod
    def from_settings(cls, settings: Any) -> Allowlist:
        """``STATECRAWL_NET_ALLOW`` (default empty): a list, a JSON list, or comma-separated entries."""
        raw = settings.get(ALLOW_SETTING) or []
        if isinstance(raw, str):
            text = raw.strip()
            try:
                raw = json.loads(text) if text.startswith("[") else text.split(",")
            except ValueError as exc:
                raise ConfigError(f"{ALLOW_SETTING}: {text!r} is not a JSON list: {exc}") from None
        return cls.parse(raw)

    def allows_host(self, host: str) -> bool:
        return normalize_host(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:
                candidates[0] = ip = ipaddress.IPv6Address(int(ip))
            embedded = embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded[0])
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Allowlist) and self.hosts == other.hosts
                and set(self.networks) == set(other.networks))

    def __hash__(self) -> int:
        return hash((self.hosts, frozenset(self.networks)))

    def __repr__(self) -> str:
        return f"Allowlist(hosts={sorted(self.hosts)!r}, networks={[str(n) for n in self.networks]!r})"

    def __str__(self) -> str:
        return ", ".join([*sorted(self.hosts), *map(str, self.networks)]) or "(empty)"


def _parse_network(entry: str) -> _Network | None:
    """*entry* as a network (a bare address is a /32 or /128); None if it is no address at all.

    Raises ConfigError for an address with a bad prefix (``10.0.0.1/8``,
    ``10.0.0.0/33``).
    """
    text = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    if parse_ip(text.partition("/")[0]) is None:
        return None  # not an address: perhaps a host name
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        loose = ipaddress.ip_network(text, strict=False) if "has host bits set" in str(exc) else None
        hint = f"; did you mean {loose}?" if loose is not None else ""
        raise ConfigError(f"{ALLOW_SETTING}: {entry!r} is not a valid network: {exc}{hint}") from None


def judge(host: str, addresses: Iterable[str], allow: Allowlist) -> Refusal | None:
    """The refusal of a resolution of *host* to *addresses*, None if every address may be used.

    One refused address refuses the whole answer (a name that answers with a
    public and a private address is how rebinding attacks start). An
    allow-listed host name lets every address through; an allow-listed
    network lets through the addresses in it. Something that is not an IP
    address at all is refused.
    """
    if allow.allows_host(host):
        return None
    for text in addresses:
        ip = parse_ip(text)
        if ip is None:
            return Refusal(host, text, "not an IP address")
        if allow.allows_address(ip):
            continue
        reason = refused_reason(ip)
        if reason is not None:
            return Refusal(host, str(ip), reason)
    return None
