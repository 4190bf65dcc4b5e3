"""Destination check (delivery.md §9.4)."""

from __future__ import annotations

import ipaddress

import pytest

from mail_proxy.delivery.attachments import guard


@pytest.mark.parametrize("text", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "100.64.0.1", "255.255.255.255", "::1", "::", "fe80::1",
    "fc00::1", "fd12::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "2002:7f00:1::", "::7f00:1",
])
def test_non_public_addresses_are_forbidden(text: str) -> None:
    assert guard.is_forbidden(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ["93.184.216.34", "8.8.8.8", "2606:4700::1111",
                                  "::ffff:8.8.8.8"])
def test_public_addresses_pass(text: str) -> None:
    assert not guard.is_forbidden(ipaddress.ip_address(text))


async def test_checked_address_refuses_loopback_unless_allowed() -> None:
    with pytest.raises(guard.DestinationRefused, match=r"127\.0\.0\.1"):
        await guard.checked_address("127.0.0.1", 80, allow_private=False)
    with pytest.raises(guard.DestinationRefused):
        await guard.checked_address("localhost", 80, allow_private=False)
    addr = await guard.checked_address("127.0.0.1", 80, allow_private=True)
    assert str(addr) == "127.0.0.1"


async def test_unresolvable_name_is_a_resolution_failure() -> None:
    # .invalid is reserved (RFC 6761) and never resolves, so no query leaves the host.
    with pytest.raises(guard.ResolutionFailed):
        await guard.checked_address("nothing.invalid", 80, allow_private=False)
