"""A TCP relay that adds a fixed delay in each direction: a network round trip on loopback.

``python -m bench.delay LISTEN_PORT TARGET_PORT ONE_WAY_MS`` listens on 127.0.0.1:LISTEN_PORT,
relays every connection to 127.0.0.1:TARGET_PORT, and delivers each chunk ONE_WAY_MS after it
arrived, in order, in both directions (so a round trip takes twice that). It prints
``ready`` once bound and runs until SIGTERM/SIGINT. Run in its own process, like the sink, so
its work never shares a core's interpreter with the client under test.

Loopback hides what pipelining saves: a command that waits for its reply costs a few
microseconds there, and a round trip on any real network.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Any

from bench.common import run, serve_until_stopped


class _Leg(asyncio.Protocol):
    """One side of a relayed connection; what it receives reaches the peer ``delay`` later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: Any = None
        self.peer: _Leg | None = None
        self.due: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.early: list[bytes] = []  # received before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.due.append((loop.time() + self.delay, data))
        if self.timer is None:
            self.timer = loop.call_at(self.due[0][0], self._release)

    def _release(self) -> None:
        # One timer per leg, never one per chunk: equal deadlines must keep their order.
        loop = asyncio.get_running_loop()
        self.timer = None
        now = loop.time()
        while self.due and self.due[0][0] <= now:
            _, data = self.due.popleft()
            if self.peer is not None and self.peer.transport is not None:
                if not self.peer.transport.is_closing():
                    self.peer.transport.write(data)
            else:
                self.early.append(data)
        if self.due:
            self.timer = loop.call_at(self.due[0][0], self._release)
        elif self.closing and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def join(self, peer: _Leg) -> None:
        """Pair the two legs and hand over what either released before they were paired:
        the sink's greeting can arrive, and fall due, before the relay task resumes."""
        self.peer, peer.peer = peer, self
        for leg, other in ((self, peer), (peer, self)):
            for data in leg.early:
                other.transport.write(data)
            leg.early.clear()
            if leg.closing and not leg.due:
                other.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if not self.due and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(listen_port: int, target_port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()

    async def relay(client: _Leg) -> None:
        try:
            _, upstream = await loop.create_connection(lambda: _Leg(delay), "127.0.0.1",
                                                       target_port)
        except OSError:
            client.transport.close()
            return
        client.join(upstream)

    pending: set[asyncio.Task[None]] = set()

    def accepted() -> _Leg:
        leg = _Leg(delay)
        task = loop.create_task(relay(leg))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return leg

    server = await loop.create_server(accepted, "127.0.0.1", listen_port, backlog=1000)
    await serve_until_stopped(server)


def main() -> None:
    listen_port, target_port, one_way_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    run(serve(listen_port, target_port, one_way_ms / 1000))


if __name__ == "__main__":
    main()
