"""The real client address: ``X-Forwarded-For`` is believed only from trusted proxies (DESIGN D8)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from bff.deps import IPNetwork


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_ip(peer: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """Walk ``X-Forwarded-For`` from the right, skipping trusted proxies; the first untrusted hop is the
    client. A peer that is not a trusted proxy is the client, whatever the header says."""
    peer_address = _parse(peer) if peer else None
    if peer_address is None:
        return "unknown"
    if not forwarded_for or not _trusted(peer_address, proxies):
        return str(peer_address)
    hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
    candidate = peer_address
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break
        candidate = address
        if not _trusted(address, proxies):
            break
    return str(candidate)
