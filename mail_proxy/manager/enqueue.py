"""POST /commands/add-messages and the CLI's `send`: validate, then store in one transaction.

The write goes through ``store.grouped`` so that concurrent requests share one commit
(group commit); each request still answers only after the commit that holds its messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mail_proxy.errors import (
    BadRequest,
    FieldError,
    Forbidden,
    Rejection,
    ValidationFailed,
)
from mail_proxy.jsonfast import dumps_compact
from mail_proxy.manager.addresses import quote
from mail_proxy.manager.batch_validation import BatchValidator
from mail_proxy.manager.core import Core, Principal, now
from mail_proxy.manager.queue_cap import queue_room, waiting_count
from mail_proxy.manager.tenant_cache import tenant_cache
from mail_proxy.manager.validation import (
    ValidationContext,
    ValidMessage,
    message_id_domain,
    parse_priority,
)
from mail_proxy.store.base import Guard, check_guard
from mail_proxy.store.errors import RowsMissing

T = TypeVar("T")
TOP_LEVEL = frozenset({"messages", "default_priority", "tenant_id"})


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
    cache = tenant_cache(core)
    asked_at = time.monotonic()
    tenants, pec_accounts = await cache.load(core, named)
    ctx = ValidationContext(tenants=tenants, settings=settings, request_tenant_id=request_tenant,
                            key_tenant_id=key_tenant, batch_default_priority=default_priority,
                            now=now())
    accepted, rejected = await _validate(ctx, entries, settings)
    if cache.read_before(named, asked_at) and any(r["code"] in _CACHE_SENSITIVE for r in rejected):
        # A tenant or account created (or reactivated) in the last second, by the CLI or
        # another worker, is not in a cached entry yet: read them afresh before refusing.
        cache.forget(named)
        tenants, pec_accounts = await cache.load(core, named)
        ctx = dataclasses.replace(ctx, tenants=tenants)
        accepted, rejected = await _validate(ctx, entries, settings)
    listed = tenant_cache(core).with_suppressions
    if accepted and settings.suppression_enabled and listed & {m.tenant_id for _, m in accepted}:
        accepted = await _drop_suppressed(core, accepted, rejected)
    stored = 0
    if accepted:
        log_row = _log_row(core, principal, body, audit, request_tenant,
                           {m.tenant_id for _, m in accepted})
        async with queue_room(core, len(accepted)):
            stored = await _store_accepted(core, accepted, rejected, pec_accounts, log_row)
    if stored:
        for tenant_id in {m.tenant_id for _, m in accepted}:
            core.wake(tenant_id)
        await core.store.notify(",".join(sorted({m.tenant_id for _, m in accepted})))
    if core.metrics is not None:
        _count(core, accepted, rejected, stored, entries, ctx)
    answer: dict[str, Any] = {"ok": True, "queued": stored, "rejected": rejected}
    answer_recorded = stored > 0 and audit is not None and settings.command_log_enabled
    if answer_recorded:
        answer["_recorded"] = True
    if stored == 0:
        raise AllRejected(answer["rejected"])
    return answer


# Refusals that a cached tenant entry up to TENANT_CACHE_SECONDS old can cause wrongly.
_CACHE_SENSITIVE = frozenset({"tenant_not_found", "tenant_inactive", "account_not_found",
                              "account_required"})


async def _validate(ctx: ValidationContext, entries: list[Any], settings: Any
                    ) -> tuple[list[tuple[int, ValidMessage]], list[dict[str, Any]]]:
    validator = BatchValidator(ctx, message_id_domain=message_id_domain(settings))
    with collector_paused(len(entries)):
        async for start, part in _slices(entries):
            validator.add(part, start)
    return validator.accepted, validator.rejected


def _log_row(core: Core, principal: Principal, body: object, audit: str | None,
             request_tenant: str | None, tenants: set[str]) -> dict[str, Any] | None:
    """The command-log row: its tenant is the key's, the request's, or else the one tenant
    every stored message names (an admin batch naming tenants per message is still one
    tenant's, and `command-log --tenant` must find it); a batch of several has none."""
    if audit is None or not core.settings.command_log_enabled:
        return None
    key_tenant = principal.tenant_id if principal.is_tenant else None
    only = next(iter(tenants)) if len(tenants) == 1 else None
    return {"actor": principal.actor, "endpoint": audit,
            "tenant_id": key_tenant or request_tenant or only, "payload": body}


async def _store_accepted(core: Core, accepted: list[tuple[int, ValidMessage]],
                          rejected: list[dict[str, Any]], pec_accounts: dict[tuple[str, str], bool],
                          log_row: dict[str, Any] | None) -> int:
    """Store the valid messages; the ones refused at commit time join ``rejected``."""
    # Rows are built before the shared transaction is entered: JSON encoding and
    # encryption are CPU work on the loop, and the writer (and every request grouped
    # with this one) should not wait for them.
    t = now()
    rows = []
    with collector_paused(len(accepted)):
        async for _, part in _slices(accepted):
            rows += [_row(m, t, pec_accounts.get((m.tenant_id, m.account_id), False),
                          core.keyring) for _, m in part]
    stored, late = await _store(core, accepted, rows, rejected, log_row)
    rejected.extend(late)
    rejected.sort(key=lambda r: r["index"])
    if core.settings.max_queued_messages:
        waiting_count(core).added(stored)
    return stored


def _count(core: Core, accepted: list[tuple[int, ValidMessage]], rejected: list[dict[str, Any]],
           stored: int, entries: list[Any], ctx: ValidationContext) -> None:
    late = {r["index"] for r in rejected}
    per_tenant: dict[str, int] = {}
    for index, m in accepted:
        if index not in late:
            per_tenant[m.tenant_id] = per_tenant.get(m.tenant_id, 0) + 1
    for tenant_id, n in per_tenant.items():
        core.metrics.enqueued_total.labels(tenant_id).inc(n)
    for r in rejected:
        entry = entries[r["index"]] if 0 <= r["index"] < len(entries) else None
        core.metrics.rejected_total.labels(_rejection_tenant(entry, ctx), r["code"]).inc()


def _rejection_tenant(entry: object, ctx: ValidationContext) -> str:
    """The tenant a rejected message was meant for, as metrics.md §4 labels it; "" when it
    names no existing tenant, so that made-up tenant ids cannot add series without end."""
    own = entry.get("tenant_id") if isinstance(entry, dict) else None
    tenant_id = own if isinstance(own, str) and own else (ctx.request_tenant_id
                                                          or ctx.key_tenant_id)
    return tenant_id if tenant_id and tenant_id in ctx.tenants else ""


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


async def _store(core: Core, accepted: list[tuple[int, ValidMessage]],
                 rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                 log_row: dict[str, Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """Store the messages whose tenant and account still exist; returns how many were
    stored and the messages refused in the write transaction.

    Validation read the tenants and accounts before (from a cache up to a second old); a
    DELETE with force may have removed one since. Checks 4 and 5 of messages.md §2 must
    hold when the messages are committed, so the insert verifies its accounts in its own
    transaction (the guard). When one is gone nothing is written, its messages are
    rejected as validation would have rejected them, and the rest are stored in a new
    transaction: that second attempt only happens after such a race.
    """
    late: list[dict[str, Any]] = []
    while accepted:
        try:
            stored, refused = await _store_once(core.store, accepted, rows, rejected + late,
                                                log_row)
        except RowsMissing as gone:
            tenant_cache(core).forget({r["tenant_id"] for r in gone.rows})
            accepted, rows = _without_vanished(gone.rows, accepted, rows, late)
        else:
            return stored, late + refused
    return 0, late


def _guard(accepted: list[tuple[int, ValidMessage]]) -> Guard:
    """The insert's guard: the (tenant, account) pairs its messages go to.

    The arrays go as JSON text, which both backends take for an array parameter: it is
    what SQLite binds anyway, and orjson writes it in a tenth of the time the store's
    json.dumps takes (5 us of a 200 us single-message request)."""
    pairs = sorted({(m.tenant_id, m.account_id) for _, m in accepted})
    return ("enqueue_missing_accounts", {"tenant_ids": dumps_compact([t for t, _ in pairs]),
                                         "account_ids": dumps_compact([a for _, a in pairs])})


def _without_vanished(gone: list[dict[str, Any]], accepted: list[tuple[int, ValidMessage]],
                      rows: list[dict[str, Any]], late: list[dict[str, Any]]
                      ) -> tuple[list[tuple[int, ValidMessage]], list[dict[str, Any]]]:
    """The messages whose account is still there, with their rows; the others are added
    to ``late``."""
    tenant_left = {(r["tenant_id"], r["account_id"]): bool(r["tenant_exists"]) for r in gone}
    kept: list[tuple[int, ValidMessage]] = []
    kept_rows: list[dict[str, Any]] = []
    for (index, m), row in zip(accepted, rows, strict=True):
        pair = (m.tenant_id, m.account_id)
        if pair in tenant_left:
            late.append(_vanished(m, tenant_left[pair]).entry(index, m.id))
        else:
            kept.append((index, m))
            kept_rows.append(row)
    return kept, kept_rows


def _vanished(m: ValidMessage, tenant_left: bool) -> Rejection:
    """The rejection of checks 4 and 5 (messages.md §2), saying when it was found out."""
    if not tenant_left:
        return Rejection(code="tenant_not_found", field="tenant_id",
                         reason=f"'tenant_id': tenant {quote(m.tenant_id)} was deleted while "
                                "the message was being stored")
    return Rejection(code="account_not_found", field="account_id",
                     reason=f"'account_id': account {quote(m.account_id)} of tenant "
                            f"{quote(m.tenant_id)} was deleted while the message was being "
                            "stored")


async def _store_once(store: Any, accepted: list[tuple[int, ValidMessage]],
                      rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                      log_row: dict[str, Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """Insert new messages, replace resubmitted ones (T3), refuse processed ones, and
    write the command-log row of the request when asked to; RowsMissing, with nothing
    written, when the guard finds an account gone.

    ``rows[i]`` is the row of ``accepted[i]``. Almost every enqueue carries only new ids, so
    that case is tried first: every row inserted at once with the command-log row, reading
    only the guard's index entries, grouped with concurrent requests (on SQLite a whole
    group of them is one hand-off to the database thread). A unique conflict leaves nothing
    written, and the general path decides message by message in a transaction of its own.
    """
    guard = _guard(accepted)
    if await store.grouped_insert("message_insert", rows, *(
            ("command_log_insert", _log_values(log_row, len(rows), rejected))
            if log_row is not None else ()), guard=guard):
        return len(rows), []
    return await store.grouped(
        lambda tx: _store_each(tx, accepted, rows, rejected, log_row, guard))


async def _store_each(tx: Any, accepted: list[tuple[int, ValidMessage]],
                      rows: list[dict[str, Any]], rejected: list[dict[str, Any]],
                      log_row: dict[str, Any] | None, guard: Guard
                      ) -> tuple[int, list[dict[str, Any]]]:
    """The general path of :func:`_store_once`: read which ids exist, then insert or
    replace."""
    await check_guard(tx, guard)
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
