"""actors.web.client_address: the peer, trusted proxies' X-Forwarded-For, spoofing."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from actors.runtime.env import trusted_proxies
from actors.web.client_address import client_address, parse_address, throttle_key

PROXIES = trusted_proxies("10.0.0.1, 10.1.0.0/16 fd00::/8")


def request(peer: object, *forwarded: str) -> web.Request:
    """A request from socket peer ``peer`` carrying these X-Forwarded-For lines."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        peer if name == "peername" else default
    )
    headers = CIMultiDict(("X-Forwarded-For", line) for line in forwarded)
    return make_mocked_request("POST", "/api/v1/login", headers=headers, transport=transport)


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header() -> None:
    r = request(("203.0.113.7", 5555), "198.51.100.1")
    assert client_address(r, ()) == "203.0.113.7"


@pytest.mark.parametrize(
    "forwarded",
    [
        ("198.51.100.1",),
        ("198.51.100.1, 10.0.0.1",),
        ("1.2.3.4", "5.6.7.8"),
        ("not an address",),
    ],
)
def test_a_spoofed_header_from_an_untrusted_peer_is_ignored(forwarded: tuple[str, ...]) -> None:
    assert client_address(request(("203.0.113.7", 1), *forwarded), PROXIES) == "203.0.113.7"


def test_from_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() -> None:
    r = request(("10.0.0.1", 1), "6.6.6.6, 198.51.100.1, 10.1.2.3")
    # 6.6.6.6 was written by the client itself: never believed.
    assert client_address(r, PROXIES) == "198.51.100.1"


def test_several_header_lines_are_one_list() -> None:
    r = request(("10.0.0.1", 1), "6.6.6.6", "198.51.100.1", "10.1.0.9")
    assert client_address(r, PROXIES) == "198.51.100.1"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_address(request(("10.0.0.1", 1)), PROXIES) == "10.0.0.1"
    assert client_address(request(("10.0.0.1", 1), ""), PROXIES) == "10.0.0.1"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    r = request(("10.0.0.1", 1), "10.1.0.5, 10.1.0.6")
    assert client_address(r, PROXIES) == "10.1.0.5"


def test_garbage_stops_the_walk_at_the_last_vouched_hop() -> None:
    r = request(("10.0.0.1", 1), "198.51.100.1, <script>, 10.1.0.7")
    assert client_address(r, PROXIES) == "10.1.0.7"


def test_forms_proxies_write_addresses_in() -> None:
    r = request(("10.0.0.1", 1), "[2001:db8::5]:443")
    assert client_address(r, PROXIES) == "2001:db8::5"
    r = request(("10.0.0.1", 1), " 198.51.100.1:8080 ")
    assert client_address(r, PROXIES) == "198.51.100.1"
    r = request(("::ffff:10.0.0.1", 1, 0, 0), "::ffff:198.51.100.9")
    assert client_address(r, PROXIES) == "198.51.100.9", "IPv4-mapped peers and hops are IPv4"


def test_ipv6_proxies() -> None:
    r = request(("fd12::1", 1, 0, 0), "2001:db8::1, fd00::2")
    assert client_address(r, PROXIES) == "2001:db8::1"


def test_a_peer_without_an_ip_address() -> None:
    assert client_address(request(None, "1.2.3.4"), PROXIES) == "unknown"
    assert client_address(request("/run/userhub.sock", "1.2.3.4"), PROXIES) == "unknown"


def test_a_huge_chain_is_read_only_from_the_right() -> None:
    hops = ", ".join(["10.1.0.1"] * 1000)
    r = request(("10.0.0.1", 1), "198.51.100.1, " + hops)
    assert client_address(r, PROXIES) == "10.1.0.1", "the chain is cut, never trusted further"


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert throttle_key("2001:db8:1:2:aaaa::1") == throttle_key("2001:db8:1:2:ffff::9")
    assert throttle_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert throttle_key("2001:db8:1:3::1") != throttle_key("2001:db8:1:2::1")
    assert throttle_key("198.51.100.1") == "198.51.100.1"
    assert throttle_key("unknown") == "unknown"


def test_parse_address() -> None:
    assert parse_address(None) is None and parse_address("") is None
    assert parse_address("[::1") is None
    assert str(parse_address("fe80::1%eth0")) == "fe80::1%eth0"


def test_bad_trusted_proxies_fail_loudly() -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        trusted_proxies("10.0.0.1, proxy.example")
    assert trusted_proxies("") == ()
