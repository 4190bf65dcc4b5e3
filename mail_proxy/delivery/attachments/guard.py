"""Destination check for fetched URLs (delivery.md §9.4): only public addresses, unless allowed.

The check resolves the name once and hands back the address to connect to, so a second
DNS answer (rebinding) cannot send the request somewhere the check never saw.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Blocks the generic flags of the ipaddress module miss or that must be refused explicitly.
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",        # "this network"
    "100.64.0.0/10",    # carrier-grade NAT, reachable only inside the provider
    "192.0.0.0/24",     # IETF protocol assignments
    "198.18.0.0/15",    # benchmarking
    "fc00::/7",         # unique local
    "64:ff9b:1::/48",   # local-use NAT64
)]


class DestinationRefused(Exception):
    """The URL's host is, or resolves to, an address that is not public."""


class ResolutionFailed(Exception):
    """The host name could not be resolved (a transient cause)."""


def is_forbidden(address: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, unspecified and reserved addresses,
    also when written as IPv4-mapped, IPv4-compatible or 6to4 IPv6 forms."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d reaches a.b.c.d itself, so that address alone decides.
            return is_forbidden(address.ipv4_mapped)
        embedded = address.sixtofour
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # IPv4-compatible
        if embedded is not None and is_forbidden(embedded):
            return True
    if (address.is_loopback or address.is_private or address.is_link_local
            or address.is_multicast or address.is_unspecified or address.is_reserved
            or not address.is_global):
        return True
    return any(address in net for net in _EXTRA_BLOCKED if net.version == address.version)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of `host`, through the loop's resolver (a thread, never blocking)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolutionFailed(f"cannot resolve {host}: {exc}") from None
    out: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # Scope ids ("fe80::1%eth0") are dropped: the address alone decides the check.
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    if not out:
        raise ResolutionFailed(f"cannot resolve {host}: no address")
    return out


async def checked_address(host: str, port: int, *, allow_private: bool) -> IPAddress:
    """The address to connect to; DestinationRefused when any answer is not public.

    Every answer must pass, not just the first, since the check must not depend on
    which answer a later connection would have picked.
    """
    addresses = await resolve(host, port)
    if not allow_private:
        for addr in addresses:
            if is_forbidden(addr):
                raise DestinationRefused(
                    f"{host} resolves to {addr}, which is not a public address")
    return addresses[0]
