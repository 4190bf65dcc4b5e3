"""The worker's send slots (delivery.md §3 step 1): a first-come-first-served counting limit
whose bound follows ``max_concurrent_sends`` while sends hold and wait for slots.

An ``asyncio.Semaphore`` cannot be resized: replacing it on a settings change stranded the
loops waiting on the old one (their messages stayed ``sending``, leases renewed, until the
worker stopped) and let sends that took old slots release into the new one, past its bound.
"""

from __future__ import annotations

import asyncio
from collections import deque


class SendSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.size and not self._waiters:
            self.used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancellation: give it back
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.used -= 1
        self._grant()

    def resize(self, size: int) -> None:
        """A new bound: a larger one admits waiters now; a smaller one admits nobody new
        until enough sends have finished (sends already holding slots are never cut)."""
        self.size = size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)
