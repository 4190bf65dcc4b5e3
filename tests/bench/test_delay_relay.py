"""bench/delay.py pairs a client leg with its upstream leg only after the upstream connection
is made; what either side releases before that must still reach the other."""

from __future__ import annotations

import asyncio

from bench.delay import _Leg


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def _released(leg: _Leg, data: bytes) -> None:
    leg.data_received(data)
    await asyncio.sleep(leg.delay * 3)  # the leg's timer fires with no peer yet


def test_greeting_released_before_pairing_reaches_the_client() -> None:
    async def scenario() -> tuple[_Transport, _Transport]:
        client, upstream = _Leg(0.001), _Leg(0.001)
        client_side, upstream_side = _Transport(), _Transport()
        client.connection_made(client_side)  # type: ignore[arg-type]
        upstream.connection_made(upstream_side)  # type: ignore[arg-type]
        await _released(upstream, b"220 ready\r\n")
        await _released(client, b"EHLO x\r\n")
        client.join(upstream)
        return client_side, upstream_side

    client_side, upstream_side = asyncio.run(scenario())
    assert client_side.written == [b"220 ready\r\n"]
    assert upstream_side.written == [b"EHLO x\r\n"]


def test_a_client_gone_before_pairing_closes_the_upstream() -> None:
    async def scenario() -> _Transport:
        client, upstream = _Leg(0.001), _Leg(0.001)
        client.connection_made(_Transport())  # type: ignore[arg-type]
        upstream_side = _Transport()
        upstream.connection_made(upstream_side)  # type: ignore[arg-type]
        client.connection_lost(None)
        client.join(upstream)
        return upstream_side

    assert asyncio.run(scenario()).closed
