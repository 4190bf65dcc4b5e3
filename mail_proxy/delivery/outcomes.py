"""Recording what happened to a claimed message (messages.md §6, T7-T13).

Every write is conditional on our lease and goes through ``store.grouped`` so that many
send tasks finishing together share one commit. A write that matches no row means the lease
was lost (another worker recovered the message): it is logged as ``lease_lost`` and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mail_proxy.jsonfast import dumps_compact
from mail_proxy.manager.core import now
from mail_proxy.store.base import Step
from mail_proxy.store.errors import StoreBusy, StoreUnavailable

log = logging.getLogger("mail_proxy.delivery")
# A failed commit is retried with backoff (data.md §5): the outcome is known, and giving up
# would turn a delivered message into a "failure" that is retried and delivered twice.
WRITE_RETRY_FIRST = 1.0
WRITE_RETRY_MAX = 30.0
# Outcomes written in one hand-off at most (keeps one group's transaction short).
MAX_BATCH = 200


@dataclass(frozen=True)
class Claimed:
    """A message this worker holds a lease on."""

    pk: int
    id: str
    tenant_id: str
    account_id: str
    priority: int
    batch_code: str | None
    created_at: int
    deferred_ts: int | None
    attempts: int
    smtp_message_id: str
    is_pec: bool
    has_secrets: bool
    payload: str
    claimed_at: float = 0.0  # wall time the claim committed (leases.LeaseGuard)
    # the account row the claim was planned with; a send finding another one (deleted and
    # created again, maybe for another customer) must not use it
    account_pk: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any], claimed_at: float = 0.0,
                 account_pk: int | None = None) -> Claimed:
        return cls(pk=row["pk"], id=row["id"], tenant_id=row["tenant_id"],
                   account_id=row["account_id"], priority=row["priority"],
                   batch_code=row["batch_code"], created_at=row["created_at"],
                   deferred_ts=row["deferred_ts"], attempts=row["attempts"],
                   smtp_message_id=row["smtp_message_id"], is_pec=bool(row["is_pec"]),
                   has_secrets=bool(row["has_secrets"]), payload=row["payload"],
                   claimed_at=claimed_at, account_pk=account_pk)

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.priority, self.created_at, self.pk)

    @property
    def not_before(self) -> int:
        return max(self.created_at, self.deferred_ts or 0)


class Recorder:
    """Writes outcomes; those arriving while a write is in flight go out together.

    Each outcome is a conditional update plus (when it matched) its event row. Outcomes that
    pile up while the previous batch is being written go to the database in one transaction
    of their own (SQLite: one hand-off to its thread for BEGIN, the statements and COMMIT).
    """

    def __init__(self, store: Any, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._queue: list[tuple[Step, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()  # writes kept out of batches

    async def _write(self, msg: Claimed, query: str, params: dict[str, Any],
                     event: tuple[str, str | None, dict[str, Any]] | None) -> bool:
        """Whether the outcome is reported (and a terminal message settles now) is read from
        the tenant row in the same transaction, not from the dispatcher's configuration
        cache: a URL set or removed a moment ago must decide (reports.md §6)."""
        t = params.setdefault("now", now())
        update = {"pk": msg.pk, "me": self.owner, **params}
        step: Step = (query, update, None, None)
        if event is not None:
            update["tenant_id"] = msg.tenant_id
            kind, description, metadata = event
            # the event only when the conditional update matched: our lease still held
            step = (query, update, "outcome_event_insert", {
                "message_pk": msg.pk, "tenant_id": msg.tenant_id, "event_type": kind,
                "now": t, "description": description, "metadata": dumps_compact(metadata)})
        delay = WRITE_RETRY_FIRST
        alone = False
        while True:
            try:
                done = await self._submit(step, alone=alone)
                break
            except StoreUnavailable as exc:
                # A row lock held elsewhere (a long tenant delete, an operator's open
                # transaction) blocks this write only: retried apart, it no longer holds
                # back the outcomes it would be batched with.
                alone = alone or isinstance(exc, StoreBusy)
                log.warning("cannot record %s of %s/%s (%s); retrying in %.0f s", query,
                            msg.tenant_id, msg.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX)
        if not done:
            log.warning("lease_lost: message %s/%s is no longer this worker's (recovered "
                        "after its lease expired, or deleted or cancelled meanwhile)",
                        msg.tenant_id, msg.id)
        return bool(done)

    def _submit(self, step: Step, *, alone: bool = False) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if alone:
            self._write_apart(step, future)
            return future
        self._queue.append((step, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return future

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if len(batch) == 1:
                await self._write_one(*batch[0])
                continue
            steps = [step for step, _ in batch]
            try:
                counts = await self.store.apply_steps(steps)
            except StoreBusy:
                # one of them waits for a lock held elsewhere: each goes on its own, without
                # holding up the queue, so the others commit (the waiting one fails alone
                # again, and is retried alone)
                for step, future in batch:
                    self._write_apart(step, future)
                continue
            except StoreUnavailable as exc:  # the database itself: every caller retries
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except Exception:
                for step, future in batch:  # one bad step must not fail the others
                    await self._write_one(step, future)
                continue
            for (_, future), count in zip(batch, counts, strict=True):
                if not future.done():
                    future.set_result(count)

    def _write_apart(self, step: Step, future: asyncio.Future[int]) -> None:
        task = asyncio.create_task(self._write_one(step, future))
        self._alone.add(task)
        task.add_done_callback(self._alone.discard)

    async def _write_one(self, step: Step, future: asyncio.Future[int]) -> None:
        try:
            [count] = await self.store.apply_steps([step])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(count)

    async def sent(self, msg: Claimed, *, smtp_code: int, accepted: int,
                   refused: list[dict[str, Any]],
                   pec_deadline_at: int | None = None) -> bool:
        t = now()
        meta: dict[str, Any] = {"attempt": msg.attempts + 1, "smtp_code": smtp_code,
                                "accepted": accepted}
        if refused:
            meta["refused_recipients"] = refused
        return await self._write(msg, "mark_sent", {
            "now": t, "smtp_code": smtp_code, "pec_deadline_at": pec_deadline_at},
            ("sent", None, meta))

    async def error(self, msg: Claimed, *, code: str, text: str, attempted: bool,
                    smtp_code: int | None, extra: dict[str, Any] | None = None) -> bool:
        t = now()
        meta: dict[str, Any] = {"code": code}
        if attempted:
            meta["attempt"] = msg.attempts + 1
        if smtp_code is not None:
            meta["smtp_code"] = smtp_code
        meta.update(extra or {})
        return await self._write(msg, "mark_error", {
            "now": t, "attempted": 1 if attempted else 0, "error": text, "code": code,
            "smtp_code": smtp_code}, ("error", text, meta))

    async def deferred(self, msg: Claimed, *, next_attempt_at: int, code: str,
                       text: str | None, attempted: bool, smtp_code: int | None) -> bool:
        meta: dict[str, Any] = {"code": code, "next_attempt_at": next_attempt_at}
        if attempted:
            meta["attempt"] = msg.attempts + 1
        if smtp_code is not None:
            meta["smtp_code"] = smtp_code
        description = text if text is not None else code
        return await self._write(msg, "mark_deferred", {
            "attempted": 1 if attempted else 0, "next_attempt_at": next_attempt_at,
            "error": text, "code": code if attempted or code != "rate_limit" else None,
            "smtp_code": smtp_code}, ("deferred", description, meta))

    async def released(self, msg: Claimed) -> bool:
        """T7: given back unattempted (drain, throttle pause, suspension)."""
        return await self._write(msg, "mark_released", {}, None)
