"""X-Forwarded-For is believed only from trusted proxies (DESIGN D8)."""

from __future__ import annotations

import pytest

from bff.deps import EdgeConfig
from bff.net import client_ip

PROXIES = EdgeConfig.parse_proxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("198.51.100.9", None, "198.51.100.9"),
        ("198.51.100.9", "1.2.3.4", "198.51.100.9"),  # an untrusted peer cannot spoof
        ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the client can prepend anything; the right wins
        ("10.0.0.5", "1.2.3.4, 10.0.0.7", "1.2.3.4"),  # two proxy hops
        ("10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all trusted: the leftmost
        ("10.0.0.5", "garbage", "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4:5678", "1.2.3.4"),
        ("fd00::1", "[2001:db8::1]:443", "2001:db8::1"),
        (None, "1.2.3.4", "unknown"),
    ],
)
def test_client_ip(peer: str | None, header: str | None, expected: str) -> None:
    assert client_ip(peer, header, PROXIES) == expected
