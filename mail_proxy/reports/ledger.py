"""The reporter's database writes: leases, acknowledgements, settlement, tenant state.

Every write for one answer happens in one transaction, so a crash leaves either the whole
acknowledgement or none of it (events are then simply sent again: delivery is at least once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mail_proxy.reports")

LEASE_TTL = 60


def lease_name(tenant_id: str) -> str:
    return f"report:{tenant_id}"


async def acquire_lease(store: Any, tenant_id: str, owner: str, now: int, ttl: int) -> bool:
    """Take or renew ``report:<tenant>``; False while another worker holds it."""
    async with store.transaction() as tx:
        got = await tx.execute("lease_acquire", name=lease_name(tenant_id), me=owner, now=now,
                               ttl=ttl)
    return bool(got)


async def release_lease(store: Any, tenant_id: str, owner: str) -> None:
    async with store.transaction() as tx:
        await tx.execute("lease_release", name=lease_name(tenant_id), me=owner)


async def pending_batch(store: Any, tenant_id: str, after_id: int,
                        limit: int) -> list[dict[str, Any]]:
    return await store.fetch("report_batch", tenant_id=tenant_id, after_id=after_id,
                             limit=limit)


@dataclass
class Acknowledged:
    acked: int = 0
    refused: list[int] = field(default_factory=list)  # still pending, to send again later
    abandoned: list[dict[str, Any]] = field(default_factory=list)


def split(events: list[dict[str, Any]], refused_ids: set[str], not_found: set[str],
          max_rejections: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                        list[dict[str, Any]]]:
    """(acknowledged, refused and still pending, refused for the last time)."""
    acked, refused, abandoned = [], [], []
    for event in events:
        mid = event["message_id"]
        # An id in both lists counts as not found: sending it again could not succeed.
        if mid in refused_ids and mid not in not_found:
            if event["report_attempts"] + 1 >= max_rejections:
                abandoned.append(event)
            else:
                refused.append(event)
        else:
            acked.append(event)
    return acked, refused, abandoned


async def acknowledge(store: Any, *, tenant_id: str, events: list[dict[str, Any]],
                      refused_ids: set[str], not_found: set[str], max_rejections: int,
                      now: int, dnd_until: int | None) -> Acknowledged:
    acked, refused, abandoned = split(events, refused_ids, not_found, max_rejections)

    async def work(tx: Any) -> None:
        # The tenant row, then the messages by pk, then their events: the order of every
        # writer of these rows (docs/decisions/postgresql.md, "One lock order"). Events
        # first deadlocked with a URL removal on PostgreSQL (the PATCH failed with 503).
        await tx.execute("report_succeeded", tenant_id=tenant_id, now=now, dnd_until=dnd_until)
        await tx.fetch("report_lock_messages", pks=sorted({e["message_pk"] for e in events}))
        await tx.executemany("report_ack_event", [{"id": e["id"], "now": now} for e in acked])
        await tx.executemany("report_reject_event",
                             [{"id": e["id"], "now": now, "max_rejections": max_rejections}
                              for e in refused + abandoned])
        pks = sorted({e["message_pk"] for e in acked + abandoned})
        await tx.executemany("report_settle_message", [{"pk": pk, "now": now} for pk in pks])

    await store.grouped(work)
    for event in abandoned:
        log.warning("report of event %s (message %s/%s) abandoned after %d refusals",
                    event["id"], tenant_id, event["message_id"], max_rejections)
    return Acknowledged(acked=len(acked), refused=[e["id"] for e in refused],
                        abandoned=abandoned)


async def record_failure(store: Any, tenant_id: str, failures: int, backoff_until: int) -> None:
    async with store.transaction() as tx:
        await tx.execute("report_failed", tenant_id=tenant_id, failures=failures,
                         backoff_until=backoff_until)


async def clear_wait(store: Any, tenant_id: str) -> None:
    async with store.transaction() as tx:
        await tx.execute("report_clear_wait", tenant_id=tenant_id)
