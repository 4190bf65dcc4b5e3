"""Lease renewal and recovery of messages whose worker was lost (delivery.md §2.1-2.2)."""

from __future__ import annotations

import json
import logging
from typing import Any

from mail_proxy.manager.core import now

log = logging.getLogger("mail_proxy.delivery")


async def renew(store: Any, owner: str, lease_seconds: int) -> int:
    async with store.transaction() as tx:
        return int(await tx.execute("lease_renew", me=owner, now=now(), lease=lease_seconds))


async def recover_expired(store: Any, *, max_retries: int) -> int:
    """T14/T14b for every expired lease; returns how many messages were recovered."""
    recovered = 0
    t = now()
    async with store.transaction() as tx:
        for row in await tx.fetch("lease_expired", now=t):
            attempt = row["attempts"] + 1
            final = attempt > max_retries
            reportable = bool(row["reportable"])  # read with the row: no stale cache
            changed = await tx.execute(
                "lease_recover", pk=row["pk"], owner=row["lease_owner"], now=t,
                status="error" if final else "queued",
                next_attempt_at=None if final else t, finished_at=t if final else None,
                settled_at=t if final and not reportable else None)
            if not changed:
                continue
            recovered += 1
            if final:
                meta: dict[str, Any] = {"code": "lease_expired", "attempt": attempt,
                                        "retries_exhausted": True}
                await tx.execute("event_insert", message_pk=row["pk"], tenant_id=row["tenant_id"],
                                 event_type="error", now=t,
                                 description=f"max retries ({max_retries}) exceeded: worker lost "
                                             "during delivery",
                                 metadata=json.dumps(meta), reportable=reportable)
            else:
                meta = {"previous_owner": row["lease_owner"], "attempt": attempt}
                await tx.execute("event_insert", message_pk=row["pk"], tenant_id=row["tenant_id"],
                                 event_type="lease_expired", now=t,
                                 description="worker lost during delivery",
                                 metadata=json.dumps(meta), reportable=False)
    if recovered:
        log.warning("recovered %d messages whose worker was lost", recovered)
    return recovered
