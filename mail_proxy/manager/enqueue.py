"""POST /commands/add-messages and the CLI's `send`: validate, then store in one transaction.

The write goes through ``store.grouped`` so that concurrent requests share one commit
(group commit); each request still answers only after the commit that holds its messages.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mail_proxy.errors import BadRequest, FieldError, Forbidden, MailProxyError, ValidationFailed
from mail_proxy.jsonfast import dumps_compact
from mail_proxy.manager.core import Core, Principal, now
from mail_proxy.manager.validation import (
    BatchValidator,
    TenantInfo,
    ValidationContext,
    ValidMessage,
    message_id_domain,
    parse_priority,
)

T = TypeVar("T")
TOP_LEVEL = frozenset({"messages", "default_priority", "tenant_id"})
# A tenant's configuration is re-read at most this often on the enqueue hot path; a
# deactivated tenant or a deleted account is therefore noticed within this many seconds.
TENANT_CACHE_SECONDS = 1.0


# Below this many messages (or bytes of body) the collector is left alone: see collector_paused.
PAUSE_GC_FROM = 64
# A big batch is validated and turned into rows this many messages at a time, yielding to
# the event loop in between (about 3 ms of work each): a 1,000-message request no longer
# holds up sends and other requests for 30 ms at a stretch.
YIELD_EVERY = 100


async def _slices(items: list[T]) -> AsyncIterator[tuple[int, list[T]]]:
    """``(start, slice)`` of YIELD_EVERY items, with a turn of the event loop in between so
    that sends and small requests get through."""
    for start in range(0, len(items), YIELD_EVERY):
        if start:
            await asyncio.sleep(0)
        yield start, items[start:start + YIELD_EVERY]


@contextmanager
def collector_paused(size: int) -> Iterator[None]:
    """Hold off the cyclic garbage collector while a big batch is parsed, validated and
    turned into rows (the yields between its slices included: a few milliseconds in all,
    never across a database wait).

    A 1,000-message batch allocates tens of thousands of dicts and lists that all stay
    alive until the answer is sent. Every 700 allocations the collector scans the young ones
    again and promotes them, and the promotions soon trigger full collections of the whole
    heap: measured in-process, that was a third of the time of a 1,000-message request.
    Nothing here creates reference cycles worth collecting early; reference counting still
    frees everything as usual, and the collector runs normally once the stretch is over.
    """
    if size < PAUSE_GC_FROM or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class QueueFull(MailProxyError):
    code = "queue_full"
    status = 429


class _TenantCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, TenantInfo | None, dict[str, bool]]] = {}
        self.with_suppressions: set[str] = set()

    async def load(self, core: Core, ids: set[str]) -> tuple[dict[str, TenantInfo],
                                                             dict[tuple[str, str], bool]]:
        stamp = time.monotonic()
        missing = {i for i in ids
                   if i not in self._entries or stamp - self._entries[i][0] > TENANT_CACHE_SECONDS}
        if missing:
            rows = await core.store.fetch("enqueue_tenants", ids=sorted(missing))
            accounts = await core.store.fetch("enqueue_accounts", ids=sorted(missing))
            by_tenant: dict[str, dict[str, bool]] = {i: {} for i in missing}
            for acc in accounts:
                by_tenant[acc["tenant_id"]][acc["id"]] = bool(acc["is_pec"])
            found = {r["id"]: r for r in rows}
            for tenant_id in missing:
                row = found.get(tenant_id)
                info = None if row is None else TenantInfo(
                    id=tenant_id, active=bool(row["active"]),
                    default_account_id=row["default_account_id"],
                    account_ids=frozenset(by_tenant[tenant_id]),
                    client_base_url=row["client_base_url"])
                self._entries[tenant_id] = (stamp, info, by_tenant[tenant_id])
                if row is not None and row["suppressions"]:
                    self.with_suppressions.add(tenant_id)
                else:
                    self.with_suppressions.discard(tenant_id)
        tenants: dict[str, TenantInfo] = {}
        pec: dict[tuple[str, str], bool] = {}
        for tenant_id in ids:
            _, info, accs = self._entries[tenant_id]
            if info is not None:
                tenants[tenant_id] = info
                for acc_id, is_pec in accs.items():
                    pec[(tenant_id, acc_id)] = is_pec
        return tenants, pec



def tenant_cache(core: Core) -> _TenantCache:
    """The cache of one Core (one database): never shared between databases."""
    cache = core.caches.get("enqueue_tenants")
    if cache is None:
        cache = core.caches["enqueue_tenants"] = _TenantCache()
    return cache


class _WaitingCount:
    """How many messages wait (queued or deferred), for the ``max_queued_messages`` cap.

    Counting them is a scan of the queue: 56 ms per request at 10^6 waiting messages. Far
    from the cap, a count up to ``FRESH_SECONDS`` old plus what this worker stored since
    then is used instead (messages only leave the queue meanwhile, except what other
    instances store); from 90 % of the cap on, every request counts afresh.
    """

    FRESH_SECONDS = 1.0
    NEAR = 0.9

    def __init__(self) -> None:
        self.counted = 0
        self.at = -1e9
        self.since = 0  # stored by this worker after the count

    async def check(self, core: Core, adding: int, cap: int) -> None:
        estimate = self.counted + self.since
        if (time.monotonic() - self.at > self.FRESH_SECONDS
                or estimate + adding > cap * self.NEAR):
            self.counted = int(await core.store.fetch_value("count_waiting") or 0)
            self.at, self.since = time.monotonic(), 0
            estimate = self.counted
        if estimate + adding > cap:
            raise QueueFull(f"the queue holds {estimate} messages and the limit is {cap}")

    def added(self, stored: int) -> None:
        self.since += stored


def waiting_count(core: Core) -> _WaitingCount:
    cache = core.caches.get("enqueue_waiting")
    if cache is None:
        cache = core.caches["enqueue_waiting"] = _WaitingCount()
    return cache


def _parse_body(body: object, principal: Principal) -> tuple[list[Any], int | None, str | None]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_body")
    errors = [FieldError(k, "unknown_field", "is not a field of add-messages")
              for k in body if k not in TOP_LEVEL]
    messages = body.get("messages")
    if not isinstance(messages, list):
        errors.append(FieldError("messages", "required" if messages is None else "invalid_type",
                                 "must be an array of message objects"))
    default_priority = None
    if body.get("default_priority") is not None:
        try:
            default_priority = parse_priority(body["default_priority"])
        except ValueError:
            errors.append(FieldError("default_priority", "invalid_value",
                                     "must be 0-3 or immediate, high, medium, low"))
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        errors.append(FieldError("tenant_id", "invalid_type", "must be a string"))
    if errors:
        raise ValidationFailed(errors)
    if principal.is_tenant and tenant_id is not None and tenant_id != principal.tenant_id:
        raise Forbidden(f"this key belongs to tenant '{principal.tenant_id}', not '{tenant_id}'",
                        code="tenant_mismatch")
    return messages, default_priority, tenant_id  # type: ignore[return-value]


async def add_messages(core: Core, body: object, principal: Principal, *,
                       audit: str | None = None) -> dict[str, Any]:
    """Validate and store a batch; returns the answer of api.md §4.1.

    With ``audit`` (the endpoint label), the command-log row of a successful call is written
    in the same transaction as the messages: one commit, one fsync per request (or per group
    of concurrent requests). Raises BadRequest (all rejected, too many), Forbidden,
    ValidationFailed, QueueFull.
    """
    entries, default_priority, request_tenant = _parse_body(body, principal)
    settings = core.settings
    if len(entries) > settings.max_batch_messages:
        raise BadRequest(f"{len(entries)} messages is more than the limit of "
                         f"{settings.max_batch_messages} per request", code="too_many_messages")
    if not entries:
        return {"ok": True, "queued": 0, "rejected": []}
    key_tenant = principal.tenant_id if principal.is_tenant else None
    named: set[str] = set()
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("tenant_id"), str):
            if key_tenant is not None and entry["tenant_id"] != key_tenant:
                raise Forbidden(f"this key belongs to tenant '{key_tenant}', not "
                                f"'{entry['tenant_id']}'", code="tenant_mismatch")
            named.add(entry["tenant_id"])
    for implied in (request_tenant, key_tenant):
        if implied:
            named.add(implied)
    tenants, pec_accounts = await tenant_cache(core).load(core, named)
    ctx = ValidationContext(tenants=tenants, settings=settings, request_tenant_id=request_tenant,
                            key_tenant_id=key_tenant, batch_default_priority=default_priority,
                            now=now())
    validator = BatchValidator(ctx, message_id_domain=message_id_domain(settings))
    with collector_paused(len(entries)):
        async for start, part in _slices(entries):
            validator.add(part, start)
    accepted, rejected = validator.accepted, validator.rejected
    listed = tenant_cache(core).with_suppressions
    if accepted and settings.suppression_enabled and listed & {m.tenant_id for _, m in accepted}:
        accepted = await _drop_suppressed(core, accepted, rejected)
    if accepted and settings.max_queued_messages:
        await waiting_count(core).check(core, len(accepted), settings.max_queued_messages)
    stored = 0
    if accepted:
        log_row = None
        if audit is not None and settings.command_log_enabled:
            log_row = {"actor": principal.actor, "endpoint": audit,
                       "tenant_id": key_tenant or request_tenant, "payload": body}
        # Rows are built before the shared transaction is entered: JSON encoding and
        # encryption are CPU work on the loop, and the writer (and every request grouped
        # with this one) should not wait for them.
        t = now()
        rows = []
        with collector_paused(len(accepted)):
            async for _, part in _slices(accepted):
                rows += [_row(m, t, pec_accounts.get((m.tenant_id, m.account_id), False),
                              core.keyring) for _, m in part]
        stored, late = await _store(core.store, accepted, rows, rejected, log_row)
        rejected.extend(late)
        rejected.sort(key=lambda r: r["index"])
    if stored and settings.max_queued_messages:
        waiting_count(core).added(stored)
    if stored:
        for tenant_id in {m.tenant_id for _, m in accepted}:
            core.wake(tenant_id)
        await core.store.notify(",".join(sorted({m.tenant_id for _, m in accepted})))
    if core.metrics is not None:
        _count(core, accepted, rejected, stored)
    answer: dict[str, Any] = {"ok": True, "queued": stored, "rejected": rejected}
    answer_recorded = stored > 0 and audit is not None and settings.command_log_enabled
    if answer_recorded:
        answer["_recorded"] = True
    if stored == 0:
        raise AllRejected(answer["rejected"])
    return answer


def _count(core: Core, accepted: list[tuple[int, ValidMessage]], rejected: list[dict[str, Any]],
           stored: int) -> None:
    late = {r["index"] for r in rejected}
    per_tenant: dict[str, int] = {}
    for index, m in accepted:
        if index not in late:
            per_tenant[m.tenant_id] = per_tenant.get(m.tenant_id, 0) + 1
    for tenant_id, n in per_tenant.items():
        core.metrics.enqueued_total.labels(tenant_id).inc(n)
    for r in rejected:
        core.metrics.rejected_total.labels("", r["code"]).inc()


class AllRejected(BadRequest):
    code = "all_rejected"

    def __init__(self, rejected: list[dict[str, Any]]) -> None:
        super().__init__("no message was accepted", code="all_rejected")
        self.rejected = rejected


async def _drop_suppressed(core: Core, accepted: list[tuple[int, ValidMessage]],
                           rejected: list[dict[str, Any]]) -> list[tuple[int, ValidMessage]]:
    """Check 18 of messages.md §2: a message whose every recipient is suppressed."""
    from mail_proxy.delivery.envelope import recipients
    from mail_proxy.manager.suppressions import suppressed_among

    by_tenant: dict[str, set[str]] = {}
    rcpts: dict[int, list[str]] = {}
    for index, m in accepted:
        rcpts[index] = [r.lower() for r in recipients(m.payload)]
        by_tenant.setdefault(m.tenant_id, set()).update(rcpts[index])
    blocked = {t: await suppressed_among(core, t, addrs) for t, addrs in by_tenant.items()}
    kept = []
    for index, m in accepted:
        if blocked[m.tenant_id] and all(r in blocked[m.tenant_id] for r in rcpts[index]):
            rejected.append({"index": index, "id": m.id, "code": "suppressed",
                             "reason": "every recipient is on the tenant's suppression list"})
        else:
            kept.append((index, m))
    rejected.sort(key=lambda r: r["index"])
    return kept


def _row(m: ValidMessage, t: int, is_pec: bool, keyring: Any) -> dict[str, Any]:
    payload = m.payload
    if m.has_secrets:
        payload = dict(payload)
        payload["attachments"] = [
            {**a, "auth": keyring.encrypt_json(a["auth"])} if a.get("auth") else a
            for a in payload["attachments"]]
    deferred = m.deferred_ts is not None and m.deferred_ts > t
    return {"tenant_id": m.tenant_id, "id": m.id, "account_id": m.account_id,
            "status": "deferred" if deferred else "queued", "priority": m.priority,
            "batch_code": m.batch_code, "deferred_ts": m.deferred_ts, "now": t,
            "next_attempt_at": m.deferred_ts if deferred else t,
            "smtp_message_id": m.smtp_message_id, "is_pec": is_pec,
            "has_secrets": m.has_secrets, "payload": dumps_compact(payload)}


def _log_values(log_row: dict[str, Any], stored: int, rejected: list[dict[str, Any]]
                ) -> dict[str, Any]:
    from mail_proxy.manager.command_log import row_values

    answer = {"ok": True, "queued": stored, "rejected": sorted(rejected, key=lambda r: r["index"])}
    return row_values(response_status=200, response_body=answer, **log_row)


async def _store(store: Any, accepted: list[tuple[int, ValidMessage]],
                 rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                 log_row: dict[str, Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """Insert new messages, replace resubmitted ones (T3), refuse processed ones, and
    write the command-log row of the request when asked to.

    ``rows[i]`` is the row of ``accepted[i]``. Almost every enqueue carries only new ids, so
    that case is tried first: every row inserted at once with the command-log row, without
    reading anything, grouped with concurrent requests (on SQLite a whole group of them is
    one hand-off to the database thread). A unique conflict leaves nothing written, and
    the general path decides message by message in a transaction of its own.
    """
    if await store.grouped_insert("message_insert", rows, *(
            ("command_log_insert", _log_values(log_row, len(rows), rejected))
            if log_row is not None else ())):
        return len(rows), []
    return await store.grouped(lambda tx: _store_each(tx, accepted, rows, rejected, log_row))


async def _store_each(tx: Any, accepted: list[tuple[int, ValidMessage]],
                      rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                      log_row: dict[str, Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """The general path of :func:`_store`: read which ids exist, then insert or replace."""
    by_tenant: dict[str, list[int]] = {}
    for position, (_, m) in enumerate(accepted):
        by_tenant.setdefault(m.tenant_id, []).append(position)
    inserts: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    stored = 0
    for tenant_id, positions in by_tenant.items():
        existing = {r["id"]: r for r in await tx.fetch(
            "message_statuses", tenant_id=tenant_id, ids=[accepted[i][1].id for i in positions])}
        for position in positions:
            index, m = accepted[position]
            row = rows[position]
            old = existing.get(m.id)
            if old is None:
                inserts.append(row)
                stored += 1
            elif old["status"] in ("queued", "deferred", "cancelled"):
                await tx.execute("message_replace", pk=old["pk"], **row)
                await tx.execute("event_insert", message_pk=old["pk"], tenant_id=tenant_id,
                                 event_type="queued", now=row["now"], description=None,
                                 metadata=json.dumps({"cause": "resubmitted"}), reportable=False)
                stored += 1
            else:
                late.append({"index": index, "id": m.id, "code": "already_processed",
                             "reason": f"message '{m.id}' was already processed "
                                       f"(status {old['status']})"})
    await tx.executemany("message_insert", inserts)
    if log_row is not None and stored:
        await tx.execute("command_log_insert", **_log_values(log_row, stored, rejected + late))
    return stored, late
