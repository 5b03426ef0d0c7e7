"""The address policy (``refused_reason``), the allowlist and the judgement of one DNS answer."""

from __future__ import annotations

import ipaddress

import pytest
from scrapy.settings import Settings

from statecrawl.exceptions import ConfigError
from statecrawl.net import Allowlist, Refusal, judge, parse_ip, refused_reason

REFUSED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.100.100.200", "shared address space (CGNAT)"),  # Alibaba Cloud's metadata
    ("169.254.169.254", "the cloud metadata address (link-local)"),
    ("169.254.1.1", "link-local"),
    ("192.0.0.8", "reserved (IETF protocol assignments)"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.88.99.1", "reserved (6to4 relay anycast)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private (unique local)"),
    ("fd00:ec2::254", "private (unique local)"),  # AWS's IPv6 metadata address
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "private (site-local)"),
    ("ff02::1", "multicast"),
    ("100::1", "reserved"),  # discard-only
    ("4000::1", "reserved"),  # outside 2000::/3
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "reserved (ORCHID)"),
    ("64:ff9b:1::a00:1", "private (local-use NAT64)"),
    ("::127.0.0.1", "reserved (deprecated IPv4-compatible)"),
    ("::8.8.8.8", "reserved (deprecated IPv4-compatible)"),
    # IPv6 that stands for an IPv4 address is judged as that address
    ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
    ("::ffff:169.254.169.254", "the cloud metadata address (link-local) (IPv4-mapped 169.254.169.254)"),
    ("::ffff:10.0.0.1", "private (IPv4-mapped 10.0.0.1)"),
    ("::ffff:0:127.0.0.1", "loopback (IPv4-translated 127.0.0.1)"),
    ("64:ff9b::127.0.0.1", "loopback (NAT64 127.0.0.1)"),
    ("64:ff9b::a9fe:a9fe", "the cloud metadata address (link-local) (NAT64 169.254.169.254)"),
    ("2002:7f00:1::1", "loopback (6to4 127.0.0.1)"),
    ("2002:c0a8:101::1", "private (6to4 192.168.1.1)"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback (Teredo 127.0.0.1)"),
]

ALLOWED = [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "172.32.0.1", "100.128.0.1", "169.253.255.255",
    "223.255.255.255", "2606:4700:4700::1111", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refused_addresses_and_why(address: str, reason: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1%eth0"),
    ("localhost", None), ("127.1", None), ("2130706433", None), ("", None),
])
def test_parse_ip_takes_only_literals(text: str, expected: str | None) -> None:
    ip = parse_ip(text)
    assert (None if ip is None else str(ip)) == expected


def test_allowlist_parses_hosts_networks_and_addresses() -> None:
    allow = Allowlist.parse(["Intranet.Example.", "10.1.0.0/16", "127.0.0.2", "[::1]", " ", "fd00::/8",
                             "bücher.example"])
    assert allow.hosts == {"intranet.example", "xn--bcher-kva.example"}
    assert [str(n) for n in allow.networks] == ["10.1.0.0/16", "127.0.0.2/32", "::1/128", "fd00::/8"]
    assert allow.allows_host("INTRANET.example") and allow.allows_host("bücher.example")
    assert not allow.allows_host("www.intranet.example")  # exact names, no subdomains
    assert allow.allows_address(ipaddress.ip_address("10.1.200.3"))
    assert not allow.allows_address(ipaddress.ip_address("10.2.0.1"))
    # an IPv4-mapped address is in the IPv4 network it stands for
    assert allow.allows_address(ipaddress.ip_address("::ffff:127.0.0.2"))
    assert not Allowlist.parse([]) and Allowlist.parse(["a.example"]) == Allowlist.parse(["A.example."])


@pytest.mark.parametrize("value", [
    ["localhost", "10.0.0.0/8"], "localhost,10.0.0.0/8", " localhost , 10.0.0.0/8 ", '["localhost", "10.0.0.0/8"]',
])
def test_allowlist_setting_takes_a_list_a_json_list_or_commas(value: object) -> None:
    assert Allowlist.from_settings(Settings({"STATECRAWL_NET_ALLOW": value})) == Allowlist.parse(
        ["localhost", "10.0.0.0/8"])
    assert not Allowlist.from_settings(Settings())


@pytest.mark.parametrize(("entry", "message"), [
    ("http://intranet.example", "'http://intranet.example' is neither a host name nor an IP address"),
    ("intranet.example:8080", "'intranet.example:8080' is neither a host name nor an IP address"),
    ("*.intranet.example", "'*.intranet.example' is neither a host name nor an IP address"),
    ("intranet example", "'intranet example' is neither a host name nor an IP address"),
    ("127.1", "'127.1' is neither a host name nor an IP address"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not a valid network"),
    ("10.0.0.1/8", "'10.0.0.1/8' is not a valid network: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"),
    ("fd00::1/8", "did you mean fd00::/8?"),
])
def test_allowlist_names_a_bad_entry(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match="STATECRAWL_NET_ALLOW") as info:
        Allowlist.parse(["10.0.0.0/8", entry])
    assert message in str(info.value)


def test_one_refused_address_refuses_the_answer() -> None:
    nothing = Allowlist()
    assert judge("example.com", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"], nothing) is None
    # a name that answers with a public and a private address is refused as a whole
    assert judge("mixed.example", ["93.184.215.14", "10.0.0.5"], nothing) == Refusal(
        "mixed.example", "10.0.0.5", "private")
    assert judge("odd.example", ["not-an-ip"], nothing) == Refusal("odd.example", "not-an-ip", "not an IP address")
    assert judge("nothing.example", [], nothing) is None


def test_the_allowlist_lets_hosts_and_networks_through() -> None:
    allow = Allowlist.parse(["intranet.example", "10.0.0.0/24"])
    assert judge("intranet.example", ["192.168.9.9", "127.0.0.1"], allow) is None  # by name: any address
    assert judge("other.example", ["10.0.0.7"], allow) is None  # by network
    assert judge("other.example", ["10.0.0.7", "10.0.1.7"], allow) == Refusal(
        "other.example", "10.0.1.7", "private")


def test_refusal_messages_say_what_and_how_to_allow() -> None:
    assert str(Refusal("127.0.0.1", "127.0.0.1", "loopback")) == (
        "refused: 127.0.0.1 is loopback (STATECRAWL_NET_ALLOW to allow)")
    assert str(Refusal("localhost", "::1", "loopback")) == (
        "refused: localhost resolves to ::1, which is loopback (STATECRAWL_NET_ALLOW to allow)")
