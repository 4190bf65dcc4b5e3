"""Sliding-window rate limits counted from the durable ``send_log`` (delivery.md §6).

Because the log lives in the database, limits survive restarts and hold across every worker
sharing it. A reservation counts and inserts in one write transaction (SQLite: BEGIN
IMMEDIATE; PostgreSQL: row locks on tenant then account), so two workers can never both take
the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WINDOWS = (("per_minute", 60), ("per_hour", 3600), ("per_day", 86400))


@dataclass(frozen=True)
class Limits:
    """Configured limits of one account and its tenant; 0/None windows are unlimited."""

    account: tuple[tuple[int, int], ...]  # (window seconds, limit)
    tenant: tuple[tuple[int, int], ...]
    behavior: str = "defer"

    @classmethod
    def from_config(cls, account: dict[str, Any], tenant_limits: dict[str, Any] | None) -> Limits:
        acc = tuple((w, int(account[f"limit_{name}"])) for name, w in WINDOWS
                    if account.get(f"limit_{name}"))
        ten = tuple((w, int((tenant_limits or {})[name])) for name, w in WINDOWS
                    if (tenant_limits or {}).get(name))
        return cls(acc, ten, account.get("limit_behavior") or "defer")

    @property
    def any(self) -> bool:
        return bool(self.account or self.tenant)


@dataclass(frozen=True)
class Reservation:
    granted: bool
    send_log_id: int | None = None
    free_at: int | None = None      # earliest time a slot frees, when refused
    reject: bool = False            # refused by an account with limit_behavior = reject
    gone: bool = False              # the account (or its tenant) was deleted meanwhile


def _since(now: int, window: int) -> int:
    """Entries with ``sent_at`` above this count in ``window``.

    Times are whole seconds: an entry stamped s was taken during [s, s+1), and ``now`` is
    somewhere in [now, now+1). delivery.md §6.1 counts ``sent_at > now - W``, which frees an
    entry up to a second before W has really passed; a burst that straddled a second could
    then be followed by a full second burst 59 s later (91 sends within 60 s at a limit of
    50, measured). Counting ``sent_at >= now - W`` keeps every entry for at least W seconds
    (at most W + 1): limits are never exceeded, and a slot frees at s + W + 1.
    """
    return now - window - 1


async def _counts(db: Any, tenant_id: str, account_id: str, limits: Limits,
                  now: int) -> list[tuple[str, int, int, int]]:
    """(scope, window, limit, count) for every configured window."""
    out = []
    for window, limit in limits.tenant:
        n = await db.fetch_value("send_log_count_tenant", tenant_id=tenant_id,
                                 since=_since(now, window))
        out.append(("tenant", window, limit, int(n or 0)))
    for window, limit in limits.account:
        n = await db.fetch_value("send_log_count_account", tenant_id=tenant_id,
                                 account_id=account_id, since=_since(now, window))
        out.append(("account", window, limit, int(n or 0)))
    return out


async def _free_at(db: Any, tenant_id: str, account_id: str, scope: str, window: int,
                   limit: int, now: int) -> int:
    """A slot frees when the L-th most recent entry leaves the window (delivery.md §6.4)."""
    if scope == "tenant":
        at = await db.fetch_value("send_log_nth_tenant", tenant_id=tenant_id,
                                  since=_since(now, window), offset=limit - 1)
    else:
        at = await db.fetch_value("send_log_nth_account", tenant_id=tenant_id,
                                  account_id=account_id, since=_since(now, window),
                                  offset=limit - 1)
    return (int(at) if at is not None else now) + window + 1


async def remaining(db: Any, tenant_id: str, account_id: str, limits: Limits,
                    now: int) -> tuple[int | None, int | None]:
    """Unlocked pre-check (delivery.md §6.3): (slots left or None if unlimited, free_at)."""
    if not limits.any:
        return None, None
    left: int | None = None
    free_at: int | None = None
    for scope, window, limit, count in await _counts(db, tenant_id, account_id, limits, now):
        room = max(limit - count, 0)
        left = room if left is None else min(left, room)
        if room == 0:
            at = await _free_at(db, tenant_id, account_id, scope, window, limit, now)
            free_at = at if free_at is None else max(free_at, at)
    return left, free_at


async def reserve(store: Any, tenant_id: str, account_id: str, message_pk: int,
                  limits: Limits, now: int) -> Reservation:
    """Take one slot, or say when the earliest one frees."""
    if not limits.any:
        return Reservation(granted=True)
    async with store.transaction() as tx:
        if limits.tenant:
            await tx.fetch_one("lock_tenant_row", tenant_id=tenant_id)
        if await tx.fetch_one("lock_account_row", tenant_id=tenant_id,
                              account_id=account_id) is None:
            # deleted after the sender's cached configuration was read: the slot's row
            # would fail its foreign key
            return Reservation(granted=False, gone=True)
        exceeded = [(scope, window, limit) for scope, window, limit, count
                    in await _counts(tx, tenant_id, account_id, limits, now) if count >= limit]
        if not exceeded:
            row_id = await tx.fetch_value("send_log_reserve", tenant_id=tenant_id,
                                          account_id=account_id, message_pk=message_pk, now=now)
            return Reservation(granted=True, send_log_id=int(row_id))
        free_at = max([await _free_at(tx, tenant_id, account_id, scope, window, limit, now)
                       for scope, window, limit in exceeded])
    reject = limits.behavior == "reject" and any(s == "account" for s, _, _ in exceeded)
    return Reservation(granted=False, free_at=free_at, reject=reject)


async def settle(store: Any, reservation: Reservation, sent: bool) -> None:
    """After the SMTP transaction: the slot becomes a sent entry, or is given back."""
    if reservation.send_log_id is None:
        return

    async def work(tx: Any) -> None:
        query = "send_log_confirm" if sent else "send_log_cancel"
        await tx.execute(query, id=reservation.send_log_id)

    await store.grouped(work)
