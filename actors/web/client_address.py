"""Who is asking: the client address every throttle keys on, and how it is keyed.

Without trusted proxies (the default) the client is the socket peer.
``X-Forwarded-For`` is anyone's to write, so from an untrusted peer it is ignored:
otherwise each request could name a fresh address and walk past every per-address
limit.

Behind a reverse proxy every peer is the proxy, and all clients would share one
address and one set of limits. ``USERHUB_TRUSTED_PROXIES`` lists the proxies'
addresses or CIDRs; a request whose peer is one of them is judged by its
``X-Forwarded-For``, read from the right, because each proxy appends the address
it saw: trusted hops are skipped and the first address that is not trusted is the
client. Everything to the left of it was written by the client itself and is
never believed. If every hop is trusted (a request from inside), the leftmost is
taken; an entry that is not an address ends the walk at the last hop that is
vouched for, the proxy that passed it on.

IPv6 clients are keyed by their /64 (:func:`throttle_key`): one subscriber usually
holds a whole /64, and keyed address by address it would have 2**64 fresh limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from actors.runtime.env import IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_FOR: Final = "X-Forwarded-For"
UNKNOWN: Final = "unknown"  # a peer without an IP address (a Unix socket)
#: Hops read from the right of X-Forwarded-For; a longer chain is someone's invention.
MAX_HOPS: Final = 32
IPV6_PREFIX: Final = 64


def parse_address(text: str | None) -> IpAddress | None:
    """An IP address as a peer or a proxy writes it (``[v6]:port`` and ``v4:port`` too)."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IpAddress, trusted: Sequence[IpNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def forwarded_hops(request: web.BaseRequest) -> list[str]:
    """The X-Forwarded-For entries, left to right, over every such header line."""
    hops: list[str] = []
    for line in request.headers.getall(FORWARDED_FOR, ()):
        hops.extend(line.split(","))
    return hops[-MAX_HOPS:]


def client_address(request: web.BaseRequest, trusted: Sequence[IpNetwork]) -> str:
    """The address of the client behind this request (see the module's docstring)."""
    peer = parse_address(request.remote)
    if peer is None:
        return UNKNOWN
    if not trusted or not is_trusted(peer, trusted):
        return str(peer)
    client = peer
    for hop in reversed(forwarded_hops(request)):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address, trusted):
            break
    return str(client)


def throttle_key(address: str) -> str:
    """The part of an address a throttle counts: IPv4 as is, IPv6 by its /64."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return address if parsed is None else str(parsed)
