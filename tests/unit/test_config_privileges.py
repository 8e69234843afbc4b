"""[gateway] user/group and [limits] connection caps, as the config loader checks them."""

from __future__ import annotations

import pytest

from tlsgate.config.load import parse_config
from tlsgate.errors import ConfigError


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "<t>", "/")
    return [str(p) for p in info.value.problems]


def test_unknown_user_and_group_and_group_without_user():
    assert problems({"gateway": {"user": "no-such-user-xyz", "group": "no-such-group-xyz"}}) == [
        '<t>: gateway.user: no user "no-such-user-xyz" on this machine',
        '<t>: gateway.group: no group "no-such-group-xyz" on this machine',
    ]
    assert problems({"gateway": {"group": "0"}}) == [
        "<t>: gateway.group: group needs user: set gateway.user too (the workers' user)"
    ]


def test_existing_user_by_name_or_uid_and_connection_caps():
    config, _ = parse_config(
        {"gateway": {"user": "nobody", "group": 0}, "limits": {"max_connections": 10, "max_connections_per_ip": 2}},
        "<t>",
        "/",
    )
    assert (config.gateway.user, config.gateway.group) == ("nobody", "0")
    assert (config.limits.max_connections, config.limits.max_connections_per_ip) == (10, 2)
    assert any(
        line.startswith("<t>: limits.max_connections: ")
        for line in problems({"limits": {"max_connections": 0}})
    )
