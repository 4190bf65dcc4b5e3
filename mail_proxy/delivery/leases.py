"""Lease renewal and recovery of messages whose worker was lost (delivery.md §2.1-2.2)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from mail_proxy.manager.core import now

log = logging.getLogger("mail_proxy.delivery")


async def renew(store: Any, owner: str, lease_seconds: int) -> int:
    async with store.transaction() as tx:
        return int(await tx.execute("lease_renew", me=owner, now=now(), lease=lease_seconds))


async def recover_expired(store: Any, *, max_retries: int, owner: str | None = None,
                          holding: Callable[[], set[int]] = set,
                          ) -> list[tuple[str, str, bool]]:
    """T14/T14b for every expired lease; returns (tenant, account, ended in error) for each
    message recovered, for the caller's metrics.

    The messages ``owner`` (this worker) still ``holding``s are left alone: their leases
    lapse only when the database was unreachable for longer than a lease (renewals failed
    too), and the worker is still sending them or waiting to record their outcome.
    Recovering them made it send them again and drop the outcome it was waiting to write
    (QA hunt: 10-21 duplicates after a full disk). A row of this worker that it no longer
    holds is recovered as any other."""
    recovered: list[tuple[str, str, bool]] = []
    t = now()
    async with store.transaction() as tx:
        rows = await tx.fetch("lease_expired", now=t)
        held = holding() if any(row["lease_owner"] == owner for row in rows) else set()
        for row in rows:
            if row["lease_owner"] == owner and row["pk"] in held:
                continue
            attempt = row["attempts"] + 1
            final = attempt > max_retries
            reportable = bool(row["reportable"])  # read with the row: no stale cache
            changed = await tx.execute(
                "lease_recover", pk=row["pk"], owner=row["lease_owner"], now=t,
                status="error" if final else "queued",
                next_attempt_at=None if final else t, finished_at=t if final else None,
                settled_at=t if final and not reportable else None,
                last_error=_exhausted(max_retries) if final else LOST)
            if not changed:
                continue
            recovered.append((row["tenant_id"], row["account_id"], final))
            if final:
                meta: dict[str, Any] = {"code": "lease_expired", "attempt": attempt,
                                        "retries_exhausted": True}
                await tx.execute("event_insert", message_pk=row["pk"], tenant_id=row["tenant_id"],
                                 event_type="error", now=t,
                                 description=_exhausted(max_retries),
                                 metadata=json.dumps(meta), reportable=reportable)
            else:
                meta = {"previous_owner": row["lease_owner"], "attempt": attempt}
                await tx.execute("event_insert", message_pk=row["pk"], tenant_id=row["tenant_id"],
                                 event_type="lease_expired", now=t,
                                 description=LOST,
                                 metadata=json.dumps(meta), reportable=False)
    if recovered:
        log.warning("recovered %d messages whose worker was lost", len(recovered))
    return recovered


LOST = "worker lost during delivery"


def _exhausted(max_retries: int) -> str:
    # the failure text carries the prefix its event has (messages.md §7), as T10b's does
    return f"max retries ({max_retries}) exceeded: {LOST}"


class LeaseGuard:
    """Whether this worker still holds a message's lease, asked before its SMTP transaction.

    A worker frozen for longer than its lease (SIGSTOP, a paused VM or host) wakes up holding
    messages another worker may meanwhile have recovered (T14) and sent: sending them again
    duplicates without any crash (QA hunt of 2026-11-25: 20 of 600 messages twice after a
    45 s pause with 30 s leases). Renewals run every lease/4 and cover every held message, so
    while the last one (or the claim) is recent, the lease is still ours; otherwise the guard
    renews at once, and when fewer rows than held were renewed it reads which are still ours.
    """

    MARGIN = 2.0  # seconds kept in hand for clocks and the transaction's own time

    def __init__(self, store: Any, owner: str, held: Callable[[], int]) -> None:
        self.store = store
        self.owner = owner
        self.held = held
        self._renewed_at = 0.0
        self._owned: set[int] | None = None  # after a renewal that found leases lost
        self._owned_at = 0.0
        self._lock = asyncio.Lock()

    async def renew(self, lease_seconds: int) -> int:
        started = time.time()
        changed = await renew(self.store, self.owner, lease_seconds)
        if changed < self.held():
            rows = await self.store.fetch("lease_owned", me=self.owner)
            self._owned, self._owned_at = {int(r["pk"]) for r in rows}, started
        else:
            self._owned = None
        self._renewed_at = started
        return changed

    async def holds(self, pk: int, claimed_at: float, lease_seconds: int) -> bool:
        if self._stale(claimed_at, lease_seconds):
            async with self._lock:  # one renewal for every send that wakes up at once
                if self._stale(claimed_at, lease_seconds):
                    await self.renew(lease_seconds)
        # a claim that committed after the ownership was read is ours by construction
        return self._owned is None or claimed_at > self._owned_at or pk in self._owned

    def _stale(self, claimed_at: float, lease_seconds: int) -> bool:
        return time.time() >= max(claimed_at, self._renewed_at) + lease_seconds - self.MARGIN
