"""``max_queued_messages``: room in the queue for a request's messages (api.md §1.4, §4.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext

from mail_proxy.errors import MailProxyError
from mail_proxy.manager.core import Core


class QueueFull(MailProxyError):
    code = "queue_full"
    status = 429


class WaitingCount:
    """How many messages wait (queued or deferred), for the ``max_queued_messages`` cap.

    Counting them is a scan of the queue: 56 ms per request at 10^6 waiting messages. Far
    from the cap, a count up to ``FRESH_SECONDS`` old plus what this worker stored since
    then, plus what its requests in flight are storing (``pending``), is used instead
    (messages only leave the queue meanwhile, except what other instances store).

    From 90 % of the cap on, a request goes through :meth:`room` one at a time: it waits
    until no request of this worker is storing, counts afresh, and stores before the next
    one counts. Its count is then exact for this worker, which therefore never passes the
    cap however many requests arrive at once; such requests are no longer grouped into one
    commit, which only matters while the queue is nearly full.
    """

    FRESH_SECONDS = 1.0
    NEAR = 0.9

    def __init__(self) -> None:
        self.counted = 0
        self.at = -1e9
        self.since = 0  # stored by this worker after the count
        self.pending = 0  # being stored by requests of this worker (reserved, not yet done)
        self._stored_total = 0  # stored by this worker ever: marks where a count started
        self._near = asyncio.Lock()  # held by the one request near the cap
        self._idle = asyncio.Event()  # no request of this worker is storing
        self._idle.set()

    @asynccontextmanager
    async def room(self, core: Core, adding: int, cap: int) -> AsyncIterator[None]:
        """Hold room for ``adding`` messages while the caller stores them and calls
        :meth:`added`; QueueFull when they would pass ``cap``."""
        if not self._near.locked() and time.monotonic() - self.at > self.FRESH_SECONDS:
            await self._count(core)
        # No await from here to the reservation: a request near the cap may not start
        # counting in between.
        if not self._near.locked() and self._estimate() + adding <= cap * self.NEAR:
            with self._reserved(adding):
                yield
            return
        async with self._near:
            await self._idle.wait()
            await self._count(core)
            waiting = self._estimate()
            if waiting + adding > cap:
                raise QueueFull(f"the queue holds {waiting} messages and the limit is {cap}: "
                                f"the request's {adding} valid messages would pass it")
            with self._reserved(adding):
                yield

    def added(self, stored: int) -> None:
        self.since += stored
        self._stored_total += stored

    def _estimate(self) -> int:
        return self.counted + self.since + self.pending

    async def _count(self, core: Core) -> None:
        # What this worker stores while the count runs may or may not be in it: it is kept
        # in `since` too, so the estimate can be over (for a moment), never under.
        mark = self._stored_total
        counted = int(await core.store.fetch_value("count_waiting") or 0)
        self.counted, self.at = counted, time.monotonic()
        self.since = self._stored_total - mark

    @contextmanager
    def _reserved(self, adding: int) -> Iterator[None]:
        self.pending += adding
        self._idle.clear()
        try:
            yield
        finally:
            self.pending -= adding
            if not self.pending:
                self._idle.set()


def waiting_count(core: Core) -> WaitingCount:
    cache = core.caches.get("enqueue_waiting")
    if cache is None:
        cache = core.caches["enqueue_waiting"] = WaitingCount()
    return cache


def queue_room(core: Core, adding: int) -> AbstractAsyncContextManager[None]:
    """api.md §4.1 step 4: room in the queue for the request's valid messages, held until
    they are stored (QueueFull when there is none)."""
    cap = core.settings.max_queued_messages
    if not cap:
        return nullcontext()
    return waiting_count(core).room(core, adding, cap)
