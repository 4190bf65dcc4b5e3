"""The reporter loop of one worker (reports.md §5).

Every evaluation reads the reportable tenants in one query (state columns plus the newest
pending event id) and starts a :class:`~mail_proxy.reports.session.Turn` for each tenant
that is due, at most ``report_concurrency`` at once. Each turn is its own task, so a slow or
failing tenant only ever occupies its own slot. Evaluations happen every 2 s (to notice
events written by other processes), at once when woken, and when a turn ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from mail_proxy.reports import ledger
from mail_proxy.reports.client import ReportClient
from mail_proxy.reports.session import FORCED, IDLE, PENDING, Turn, TurnResult

log = logging.getLogger("mail_proxy.reports")

SCAN_INTERVAL = 2.0
MIN_GAP = 0.02      # coalesces a burst of wake-ups into one evaluation
ERROR_PAUSE = 30.0  # after an unexpected error in a turn (e.g. an undecryptable secret)


class Reporter:
    def __init__(self, core: Any, *, owner: str, metrics: Any = None) -> None:
        self.core = core
        self.owner = owner
        self.metrics = metrics
        self.client = ReportClient()
        self._turn = Turn(core, self.client, owner, metrics, lambda: self._stopping)
        self._active: dict[str, asyncio.Task[TurnResult]] = {}
        self._forced: set[str] = set()
        # tenant -> (newest refused event id still pending, wall time they are due again)
        self._hold: dict[str, tuple[int, float]] = {}
        self._paused: dict[str, float] = {}  # tenant -> monotonic end of an error pause
        self._last_start: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.calls = 0

    # -- control -------------------------------------------------------------------------
    def wake(self, tenant_id: str | None, forced: bool = False) -> None:
        """Evaluate now; ``forced`` with a tenant clears its do-not-disturb and backoff."""
        if forced and tenant_id is not None:
            self._forced.add(tenant_id)
            self._paused.pop(tenant_id, None)
            self._hold.pop(tenant_id, None)
        self._wakeup.set()

    async def run(self) -> None:
        try:
            while not self._stopping:
                self._wakeup.clear()
                delay = SCAN_INTERVAL
                try:
                    delay, _ = await self._evaluate()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("report scheduling failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                await asyncio.sleep(MIN_GAP)
        finally:
            if not self._stopping:  # cancelled without stop(): do not leak the turns
                await self.stop(0)

    async def run_once(self) -> int:
        """Evaluate every tenant now and wait for the turns started; returns calls made."""
        before = self.calls
        while True:
            _, deferred = await self._evaluate()
            if self._active:
                await asyncio.wait(list(self._active.values()))
            if not deferred or self._stopping:
                return self.calls - before

    async def stop(self, timeout: float) -> None:
        """No new turns; turns in flight finish their current call within ``timeout``."""
        self._stopping = True
        self._wakeup.set()
        tasks = list(self._active.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(timeout, 0.0))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.client.close()

    # -- scheduling ----------------------------------------------------------------------
    async def _evaluate(self) -> tuple[float, int]:
        """Start the due turns; returns (seconds until the next known due time, tenants
        left waiting for a free slot)."""
        settings = self.core.settings
        if self._stopping or not settings.reporting_enabled:
            return SCAN_INTERVAL, 0
        forced, self._forced = self._forced, set()
        for tenant_id in forced:
            await ledger.clear_wait(self.core.store, tenant_id)
        rows = await self.core.store.fetch("report_tenants")
        # Least recently started first, so a full set of slots never starves a tenant.
        rows.sort(key=lambda r: self._last_start.get(r["id"], 0.0))
        now = time.time()
        next_due = now + SCAN_INTERVAL
        waiting = 0
        for row in rows:
            tenant_id = row["id"]
            if tenant_id in self._active:
                if tenant_id in forced:
                    self._forced.add(tenant_id)  # its turn again once this one ends
                continue
            reason, when = self._decide(row, now, tenant_id in forced)
            if reason is None:
                if when is not None:
                    next_due = min(next_due, when)
                continue
            if len(self._active) >= max(int(settings.report_concurrency), 1):
                waiting += 1
                if tenant_id in forced:
                    self._forced.add(tenant_id)
                continue
            self._start(tenant_id, reason)
        return max(next_due - now, MIN_GAP), waiting

    def _decide(self, row: dict[str, Any], now: float,
                forced: bool) -> tuple[str | None, float | None]:
        """(why a call is due now, or None and when it may become due)."""
        tenant_id = row["id"]
        if forced:
            return FORCED, None
        if self._paused.get(tenant_id, 0.0) > time.monotonic():
            return None, None
        backoff = row["report_backoff_until"] or 0
        if backoff > now:
            return None, backoff
        newest = row["newest_pending"]
        retry_at: float | None = None
        if newest is not None:
            # Events the client refused go out again with the next call made for another
            # reason, or one idle interval after the refusal, do-not-disturb or not (calls
            # carrying events are still made then): waiting for a reason alone could hold
            # them for a whole next_sync_after, up to a day.
            refused_upto, retry_at = self._hold.get(tenant_id, (0, 0.0))
            if newest > refused_upto or retry_at <= now:
                return PENDING, None
        idle_at = (row["last_report_at"] or 0) + int(self.core.settings.report_idle_interval)
        idle_at = max(idle_at, row["report_dnd_until"] or 0)
        if idle_at <= now:
            return IDLE, None
        return None, idle_at if retry_at is None else min(idle_at, retry_at)

    def _start(self, tenant_id: str, reason: str) -> None:
        self._last_start[tenant_id] = time.monotonic()
        task = asyncio.create_task(self._run_turn(tenant_id, reason),
                                   name=f"report:{tenant_id}")
        self._active[tenant_id] = task

        def finished(_: asyncio.Task[TurnResult]) -> None:
            if self._active.get(tenant_id) is task:
                del self._active[tenant_id]
            self._wakeup.set()

        task.add_done_callback(finished)

    async def _run_turn(self, tenant_id: str, reason: str) -> TurnResult:
        try:
            result = await self._turn.run(tenant_id, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("report turn of tenant %s failed: %s: %s; pausing it for %.0f s",
                      tenant_id, type(exc).__name__, exc, ERROR_PAUSE)
            self._paused[tenant_id] = time.monotonic() + ERROR_PAUSE
            return TurnResult()
        if result.busy:
            # Look again at the next scan, not in a tight loop while the other worker works.
            self._paused[tenant_id] = time.monotonic() + SCAN_INTERVAL
        if result.refused_upto is not None:
            retry_at = time.time() + int(self.core.settings.report_idle_interval)
            self._hold[tenant_id] = (result.refused_upto, retry_at)
        elif result.calls:
            self._hold.pop(tenant_id, None)
        self.calls += result.calls
        return result
