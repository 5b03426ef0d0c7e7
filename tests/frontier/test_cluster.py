"""The Redis Cluster URL form (statecrawl.frontier.cluster): parsing, redaction, errors.

No server here: a real cluster's tests are in tests/cluster/.
"""

from __future__ import annotations

import pytest

from statecrawl.exceptions import ConfigError
from statecrawl.frontier.cluster import is_cluster_url, node_urls, parse_cluster_url
from statecrawl.frontier.connection import redact_url, redis_from_url


def test_a_seed_list_with_credentials_and_options() -> None:
    url = "redis+cluster://user:p%40ss@10.0.0.1:7000,node-b:7001,[::1]:7002,node-c/?socket_timeout=3"
    parsed = parse_cluster_url(url)
    assert parsed.nodes == (("10.0.0.1", 7000), ("node-b", 7001), ("::1", 7002), ("node-c", 6379))
    assert parsed.node_url == "redis://user:p%40ss@10.0.0.1:7000/0?socket_timeout=3"
    assert node_urls(url)[2] == "redis://user:p%40ss@[::1]:7002/0?socket_timeout=3"
    assert parse_cluster_url("rediss+cluster://h:1").node_url == "rediss://h:1/0"


def test_only_the_cluster_schemes_are_cluster_urls() -> None:
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("REDISS+CLUSTER://h:1")
    assert not any(is_cluster_url(u) for u in ("redis://h:1/0", "unix:///tmp/r.sock", "h:1", ""))


def test_the_password_is_redacted() -> None:
    shown = redact_url("redis+cluster://:s3cret@h1:7000,h2:7001/")
    assert "s3cret" not in shown and shown == "redis+cluster://:***@h1:7000,h2:7001/"


@pytest.mark.parametrize(("url", "why"), [
    ("redis+cluster://", "seed nodes"),
    ("redis+cluster://h1:7000,,h2:7001", "seed nodes"),
    ("redis+cluster://h1:port", "bad port"),
    ("redis+cluster://h1:70000", "bad port"),
    ("redis+cluster://h1:7000/1", "only database 0"),
    ("redis+cluster://h1:7000/?db=2", "db"),
])
def test_a_malformed_cluster_url_is_one_config_error(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as caught:
        redis_from_url(url)
    assert "redis+cluster://[:password@]host:port[,host:port...]" in str(caught.value)
