"""Reading and managing stored messages (api.md §4.2-4.4, §5)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mail_proxy.errors import BadRequest, NotFound
from mail_proxy.jsonfast import loads_strict
from mail_proxy.manager.core import Core, now
from mail_proxy.manager.fields import INT64_MAX, MAX_EPOCH

STATUSES = ("queued", "deferred", "sending", "sent", "error", "cancelled")
MAX_IDS = 1000


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"pk": pk}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        pk = loads_strict(raw)["pk"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BadRequest("'cursor' cannot be decoded", code="invalid_parameter",
                         detail={"parameter": "cursor"}) from exc
    if not isinstance(pk, int) or isinstance(pk, bool) or not 0 <= pk <= INT64_MAX:
        raise BadRequest("'cursor' cannot be decoded", code="invalid_parameter",
                         detail={"parameter": "cursor"})
    return pk


async def require_tenant(db: Any, tenant_id: str | None) -> None:
    """404 ``tenant_not_found`` for a named tenant that does not exist, as /accounts and
    /suppressions answer: an empty list would read as "no messages" (decisions: cli_data.md).
    ``db`` is the store or an open transaction; None (all tenants) needs no check."""
    if tenant_id is not None and await db.fetch_one("tenant_get", id=tenant_id) is None:
        raise NotFound(f"tenant '{tenant_id}' does not exist", code="tenant_not_found",
                       detail={"tenant_id": tenant_id})


def record(row: dict[str, Any]) -> dict[str, Any]:
    """The list representation of api.md §5.1."""
    payload = row["payload"]
    if isinstance(payload, str):
        payload = json.loads(payload)
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "account_id": row["account_id"],
        "status": row["status"], "priority": row["priority"], "batch_code": row["batch_code"],
        "subject": payload.get("subject"), "from": payload.get("from"), "to": payload.get("to"),
        "message_id": row["smtp_message_id"], "created_at": row["created_at"],
        "updated_at": row["updated_at"], "deferred_ts": row["deferred_ts"],
        "next_attempt_at": row["next_attempt_at"], "attempts": row["attempts"],
        "last_error": row["last_error"], "last_error_code": row["last_error_code"],
        "last_smtp_code": row["last_smtp_code"], "sent_at": row["sent_at"],
        "finished_at": row["finished_at"], "is_pec": bool(row["is_pec"]),
    }


async def list_messages(core: Core, *, tenant_id: str | None, status: str | None = None,
                        batch_code: str | None = None, limit: int = 100,
                        cursor: str | None = None) -> dict[str, Any]:
    if status in (None, "all"):
        status = None
    elif status not in STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(STATUSES)} or all",
                         code="invalid_parameter", detail={"parameter": "status"})
    if not 1 <= limit <= 1000:
        raise BadRequest("'limit' must be between 1 and 1000", code="invalid_parameter",
                         detail={"parameter": "limit"})
    before = decode_cursor(cursor) if cursor else None
    await require_tenant(core.store, tenant_id)
    rows = await core.store.fetch("message_list", tenant_id=tenant_id, status=status,
                                  batch_code=batch_code, before_pk=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"ok": True, "next_cursor": encode_cursor(rows[-1]["pk"]) if more else None,
            "messages": [record(r) for r in rows]}


def _public_auth(core: Core, stored: object) -> dict[str, Any]:
    """An attachment's ``auth`` as shown (api.md §5.2): its method, and whether a secret is
    stored, never the secret. Messages with secrets keep ``auth`` encrypted, so it is
    decrypted here; a value that cannot be (key gone) still says a secret is stored."""
    auth = stored
    if isinstance(stored, str):
        from mail_proxy.security.crypto import DecryptError, SecretUnavailable

        try:
            auth = core.keyring.decrypt_json(stored)
        except (DecryptError, SecretUnavailable):
            return {"method": "unknown", "has_secret": True}
    if not isinstance(auth, dict):
        return {"method": "unknown", "has_secret": True}
    method = auth.get("method")
    secret = any(value for key, value in auth.items() if key != "method")
    return {"method": method if isinstance(method, str) else "unknown", "has_secret": secret}


def _public_payload(core: Core, payload: dict[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    attachments = []
    for att in payload.get("attachments") or []:
        att = dict(att)
        if att.get("auth"):
            att["auth"] = _public_auth(core, att["auth"])
        path = att.get("storage_path") or ""
        if att.get("fetch_mode") == "base64" and len(path) > 256:
            att["storage_path"] = f"base64:<elided {len(path)} bytes>"
        attachments.append(att)
    out["attachments"] = attachments
    return out


async def get_message(core: Core, tenant_id: str, message_id: str) -> dict[str, Any]:
    row = await core.store.fetch_one("message_get", tenant_id=tenant_id, id=message_id)
    if row is None:
        raise NotFound(f"message '{message_id}' does not exist", code="message_not_found",
                       detail={"tenant_id": tenant_id, "id": message_id})
    out = record(row)
    out["payload"] = _public_payload(core, json.loads(row["payload"]))
    events = await core.store.fetch("message_events", pk=row["pk"])
    for event in events:
        event["metadata"] = json.loads(event["metadata"]) if event["metadata"] else None
    out["events"] = events
    return out


def check_ids(ids: object) -> list[str]:
    from mail_proxy.errors import FieldError, ValidationFailed

    # api.md §1.3: the field codes add-messages uses for `messages`
    shape = f"must be an array of 1 to {MAX_IDS} message ids"
    if ids is None:
        raise ValidationFailed([FieldError("ids", "required", f"is required: {shape}")])
    if not isinstance(ids, list):
        raise ValidationFailed([FieldError("ids", "invalid_type", shape)])
    if not 1 <= len(ids) <= MAX_IDS:
        raise ValidationFailed([FieldError("ids", "invalid_value", shape)])
    bad = [FieldError(f"ids[{i}]", "invalid_type", "must be a string")
           for i, v in enumerate(ids) if not isinstance(v, str)]
    if bad:
        raise ValidationFailed(bad)
    return list(dict.fromkeys(ids))


async def delete_messages(core: Core, tenant_id: str, ids: object) -> dict[str, Any]:
    wanted = check_ids(ids)
    removed, not_found, in_flight = 0, [], []
    async with core.store.transaction() as tx:
        await require_tenant(tx, tenant_id)
        rows = {r["id"]: r for r in await tx.fetch("message_statuses", tenant_id=tenant_id,
                                                   ids=wanted)}
        for message_id in wanted:
            row = rows.get(message_id)
            if row is None:
                not_found.append(message_id)
            elif row["status"] == "sending":
                in_flight.append(message_id)
            else:
                removed += await tx.execute("message_delete", pk=row["pk"])
    return {"ok": True, "removed": removed, "not_found": not_found, "in_flight": in_flight}


async def retry_messages(core: Core, tenant_id: str, ids: object) -> dict[str, Any]:
    wanted = check_ids(ids)
    retried, not_found, not_retryable = 0, [], []
    t = now()
    async with core.store.transaction() as tx:
        await require_tenant(tx, tenant_id)
        rows = {r["id"]: r for r in await tx.fetch("message_statuses", tenant_id=tenant_id,
                                                   ids=wanted)}
        for message_id in wanted:
            row = rows.get(message_id)
            if row is None:
                not_found.append(message_id)
                continue
            status = row["status"]
            if status in ("error", "cancelled"):
                full = await tx.fetch_one("message_get", tenant_id=tenant_id, id=message_id)
                assert full is not None
                exists = await tx.fetch_one("account_exists", tenant_id=tenant_id,
                                            account_id=full["account_id"])
                if exists is None:
                    not_retryable.append({"id": message_id, "status": status,
                                          "reason": f"account '{full['account_id']}' no "
                                                    "longer exists"})
                    continue
                await tx.execute("message_retry_error", pk=row["pk"], now=t)
            elif status == "deferred":
                await tx.execute("message_retry_deferred", pk=row["pk"], now=t)
            else:
                reason = {"sent": "message was already sent",
                          "sending": "message is being sent now",
                          "queued": "message is already queued"}[status]
                not_retryable.append({"id": message_id, "status": status, "reason": reason})
                continue
            await tx.execute("event_insert", message_pk=row["pk"], tenant_id=tenant_id,
                             event_type="queued", now=t, description=None,
                             metadata=json.dumps({"cause": "retry"}), reportable=False)
            retried += 1
    if retried:
        core.wake(tenant_id)
        await core.store.notify(tenant_id)
    return {"ok": True, "retried": retried, "not_found": not_found,
            "not_retryable": not_retryable}


async def cleanup_messages(core: Core, tenant_id: str | None,
                           older_than_seconds: int | None = None) -> dict[str, Any]:
    age = core.settings.report_retention_seconds if older_than_seconds is None \
        else older_than_seconds
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_EPOCH:
        raise BadRequest(f"'older_than_seconds' must be an integer from 0 to {MAX_EPOCH}",
                         code="invalid_parameter", detail={"parameter": "older_than_seconds"})
    await require_tenant(core.store, tenant_id)
    removed = 0
    while True:
        async with core.store.transaction() as tx:
            n = await tx.execute("cleanup_settled", before=now() - age, tenant_id=tenant_id,
                                 limit=1000)
        removed += n
        if n < 1000:
            return {"ok": True, "removed": removed}


async def counts(core: Core, tenant_id: str | None = None) -> dict[str, int]:
    rows = await core.store.fetch("message_counts", tenant_id=tenant_id)
    out = dict.fromkeys(STATUSES, 0)
    out.update({r["status"]: r["n"] for r in rows})
    return out
