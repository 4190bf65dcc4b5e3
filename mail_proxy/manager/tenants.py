"""Tenants: create/replace, read, patch, delete, API keys, batch suspension (api.md §4.6, §7).

Columns are handled in their stored form: a PATCH starts from the row, overwrites only the
columns of the fields it carries (encrypting new secrets) and writes every column back with
``tenant_update``, so untouched secrets are never decrypted and re-encrypted.
"""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.errors import (
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    KeyRingError,
    NotFound,
)
from mail_proxy.manager import auth
from mail_proxy.manager.core import Core, Principal, now, upsert
from mail_proxy.manager.fields import (
    Bad,
    Check,
    boolean,
    client_auth,
    fail_if,
    forbid_fields,
    http_url,
    identifier,
    large_file_config,
    nullable,
    rate_limits,
    read_body,
    require_object,
    scoped_tenant,
    string,
    timestamp,
    url_path,
)
from mail_proxy.security.tokens import generate_token, hash_api_key

RESERVED_IDS = frozenset({
    "list", "start", "stop", "restart", "status", "delete", "logs", "serve", "use", "current",
    "completion", "info", "stats", "token", "run-now", "config", "command-log", "rotate-key",
    "tenants", "suspend", "activate", "send", "accounts", "messages", "suppressions",
})


# Defaults of the configurable columns; a replace starts from these (api.md §7.2).
DEFAULTS: dict[str, Any] = {
    "name": None, "client_base_url": None, "client_sync_path": "/mail-proxy/sync",
    "client_attachment_path": "/mail-proxy/attachments", "client_auth": None,
    "signing_secret": None, "rate_limits": None, "large_file_config": None,
    "default_account_id": None, "active": True,
}
TENANT_KEY_FIELDS = frozenset({"name", "client_auth", "client_sync_path",
                               "client_attachment_path", "signing_secret",
                               "default_account_id"})


def tenant_checks() -> dict[str, Check]:
    # null is accepted everywhere: it restores the field's default (decisions: domain.md).
    return {
        "name": nullable(string(max_len=200)),
        "client_base_url": nullable(http_url),
        "client_sync_path": nullable(url_path),
        "client_attachment_path": nullable(url_path),
        "client_auth": nullable(client_auth),
        "signing_secret": nullable(string(min_len=32, max_len=256)),
        "rate_limits": nullable(rate_limits),
        "large_file_config": nullable(large_file_config),
        "default_account_id": nullable(identifier),
        "active": nullable(boolean),
    }


def check_references(core: Core, values: dict[str, Any], errors: list[FieldError]) -> None:
    """Rules that need the instance settings: a file:// store needs a public base URL."""
    lfc = values.get("large_file_config")
    if lfc and (lfc["storage_url"] or "").startswith("file://") \
            and not lfc["public_base_url"] and not core.settings.public_base_url:
        errors.append(FieldError("large_file_config.public_base_url", "required",
                                 "file:// storage needs a public base URL (here or in the "
                                 "instance setting public_base_url)"))


def encode(core: Core, name: str, value: Any) -> Any:
    """The stored (column) form of one normalised field value."""
    if value is None:
        value = DEFAULTS[name]
    if name == "client_auth":
        return None if value is None or value["method"] == "none" \
            else core.keyring.encrypt_json(value)
    if name == "signing_secret":
        return None if value is None else core.keyring.encrypt(value)
    if name == "large_file_config":
        return None if value is None else core.keyring.encrypt_json(value)
    if name == "rate_limits":
        return None if value is None else json.dumps(value)
    return value


async def _on_limits_set(tx: Any, tenant_id: str, columns: dict[str, Any]) -> None:
    """Tenant limits count the day's sends of every account of the tenant, including those
    made while nothing was limited (no ``send_log`` rows then)."""
    limits = json.loads(columns["rate_limits"]) if columns.get("rate_limits") else None
    if isinstance(limits, dict) and any(limits.values()):
        from mail_proxy.manager.accounts import log_past_sends

        await log_past_sends(tx, tenant_id)


def public_client_auth(core: Core, stored: str | None) -> dict[str, Any]:
    if stored is None:
        return {"method": "none"}
    try:
        obj = core.keyring.decrypt_json(stored)
    except KeyRingError:
        return {"method": "unavailable"}  # kid missing from the ring: say so, never crash
    if obj.get("method") == "bearer":
        return {"method": "bearer", "has_token": bool(obj.get("token"))}
    if obj.get("method") == "basic":
        return {"method": "basic", "user": obj.get("user"),
                "has_password": bool(obj.get("password"))}
    return {"method": "none"}


def public_large_file_config(core: Core, stored: str | None) -> dict[str, Any] | None:
    if stored is None:
        return None
    try:
        obj = dict(core.keyring.decrypt_json(stored))
    except KeyRingError:
        return {"unavailable": True}
    obj["has_storage_options"] = obj.pop("storage_options", None) is not None
    return obj


def _not_found(tenant_id: object) -> NotFound:
    return NotFound(f"tenant '{tenant_id}' does not exist", code="tenant_not_found",
                    detail={"tenant_id": tenant_id})


def _tenant_id(value: Any, errors: list[FieldError]) -> str | None:
    try:
        tid = identifier(value)
    except Bad as bad:
        errors.extend(FieldError("id", code, msg) for _, code, msg in bad.items)
        return None
    if tid.lower() in RESERVED_IDS:
        errors.append(FieldError("id", "invalid_value",
                                 f"'{tid}' is a reserved command word of the CLI"))
        return None
    return tid


def _load_json(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)


def represent(core: Core, row: dict[str, Any], pending_events: int) -> dict[str, Any]:
    """The public form of a tenant row: secrets only as ``has_*`` booleans."""
    return {
        "id": row["id"],
        "name": row["name"],
        "client_base_url": row["client_base_url"],
        "client_sync_path": row["client_sync_path"],
        "client_attachment_path": row["client_attachment_path"],
        "client_auth": public_client_auth(core, row["client_auth"]),
        "has_signing_secret": row["signing_secret"] is not None,
        "rate_limits": _load_json(row["rate_limits"], None),
        "large_file_config": public_large_file_config(core, row["large_file_config"]),
        "default_account_id": row["default_account_id"],
        "active": bool(row["active"]),
        "suspended_batches": _load_json(row["suspended_batches"], []),
        "has_api_key": row["api_key_hash"] is not None,
        "api_key_expires_at": row["api_key_expires_at"],
        "report": {
            "last_report_at": row["last_report_at"],
            "failures": row["report_failures"],
            "backoff_until": row["report_backoff_until"],
            "dnd_until": row["report_dnd_until"],
            "pending_events": pending_events,
        },
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def _fetch(core: Core, tenant_id: str) -> dict[str, Any]:
    row = await core.store.fetch_one("tenant_get", id=tenant_id)
    if row is None:
        raise _not_found(tenant_id)
    return row


async def get_tenant(core: Core, tenant_id: str) -> dict[str, Any]:
    row = await _fetch(core, tenant_id)
    pending = await core.store.fetch_value("tenant_pending_events", tenant_id=tenant_id)
    return represent(core, row, int(pending or 0))


async def list_tenants(core: Core, *, active_only: bool = False) -> list[dict[str, Any]]:
    rows = await core.store.fetch("tenant_list", active_only=bool(active_only))
    pending = {r["tenant_id"]: int(r["n"]) for r in await core.store.fetch(
        "tenant_pending_events_all")}
    return [represent(core, row, pending.get(row["id"], 0)) for row in rows]


def _require_admin(principal: Principal | None) -> None:
    if principal is not None and principal.is_tenant:
        raise Forbidden("this operation needs the admin token", code="admin_required")


async def put_tenant(core: Core, body: object, principal: Principal | None
                     ) -> tuple[dict[str, Any], bool, str | None]:
    """POST /tenant: create (201, new API key shown once) or replace (200, no key)."""
    _require_admin(principal)
    data = require_object(body)
    errors: list[FieldError] = []
    tenant_id = _tenant_id(data["id"], errors) if "id" in data else None
    if "id" not in data:
        errors.append(FieldError("id", "required", "is required"))
    values = read_body(data, tenant_checks(), errors, extra=("id",))
    values.pop("id", None)
    check_references(core, values, errors)
    fail_if(errors)
    assert tenant_id is not None
    stamp = now()

    async def attempt() -> str | None:
        """The new tenant's API key, or None when an existing tenant was replaced."""
        async with core.store.transaction() as tx:
            row = await tx.fetch_one("tenant_lock", id=tenant_id)
            await _check_default_account(tx, tenant_id, values, exists=row is not None)
            columns = {name: encode(core, name, value) for name, value in DEFAULTS.items()}
            if row is not None:
                # A replace keeps the stored secrets unless the body carries them.
                for kept in ("client_auth", "signing_secret"):
                    columns[kept] = row[kept]
            for name, value in values.items():
                columns[name] = encode(core, name, value)
            if row is None:
                api_key = generate_token()
                await tx.execute("tenant_insert", id=tenant_id, now=stamp,
                                 api_key_hash=hash_api_key(api_key), **columns)
                return api_key
            await tx.execute("tenant_update", id=tenant_id, now=stamp, **columns)
            await _on_endpoint_written(tx, row, columns, stamp)
            await _on_limits_set(tx, tenant_id, columns)
            return None

    api_key = await upsert(attempt)
    auth.forget(core)
    core.changed(tenant_id)
    return await get_tenant(core, tenant_id), api_key is not None, api_key


_ENDPOINT = ("client_base_url", "client_sync_path", "client_auth")


async def _on_endpoint_written(tx: Any, row: dict[str, Any], columns: dict[str, Any],
                               stamp: int) -> None:
    """After a tenant write. reports.md §6: without a URL nothing can be reported; pending
    events become unreportable in the same transaction so their terminal messages settle
    now. A changed endpoint starts afresh: the backoff built against the old URL (up to
    ``report_backoff_max``) kept the new one uncalled for minutes (reports hunt)."""
    if any(row[name] != columns.get(name, row[name]) for name in _ENDPOINT):
        await tx.execute("report_endpoint_changed", tenant_id=row["id"])
    if row["client_base_url"] and not columns.get("client_base_url"):
        # tenant (already locked), then messages by pk, then events: the order of every
        # writer of these rows (docs/decisions/postgresql.md, "One lock order")
        await tx.fetch("tenant_lock_unsettled", tenant_id=row["id"])
        await tx.execute("tenant_unreport_pending", tenant_id=row["id"])
        await tx.execute("tenant_settle_unreported", tenant_id=row["id"], now=stamp)


async def _check_default_account(tx: Any, tenant_id: str, values: dict[str, Any], *,
                                 exists: bool) -> None:
    account_id = values.get("default_account_id")
    if account_id is None:
        return
    found = exists and await tx.fetch_value("tenant_account_exists", tenant_id=tenant_id,
                                            id=account_id)
    if not found:
        fail_if([FieldError("default_account_id", "not_found",
                            f"account '{account_id}' does not exist for tenant '{tenant_id}'")])


async def patch_tenant(core: Core, tenant_id: str, body: object, principal: Principal | None
                       ) -> dict[str, Any]:
    """PATCH /tenant/{id}: present fields replace, ``null`` restores the default."""
    if principal is not None and principal.is_tenant:
        scoped_tenant(principal, tenant_id)
    data = require_object(body)
    if principal is not None and principal.is_tenant:
        forbid_fields([k for k in data if k != "id"], TENANT_KEY_FIELDS, "a tenant")
    errors: list[FieldError] = []
    if "id" in data and data["id"] != tenant_id:
        errors.append(FieldError("id", "conflict", "must equal the tenant id of the path"))
    values = read_body(data, tenant_checks(), errors, extra=("id",))
    values.pop("id", None)
    check_references(core, values, errors)
    fail_if(errors)
    async with core.store.transaction() as tx:
        row = await tx.fetch_one("tenant_lock", id=tenant_id)
        if row is None:
            raise _not_found(tenant_id)
        await _check_default_account(tx, tenant_id, values, exists=True)
        columns = {name: row[name] for name in DEFAULTS}
        for name, value in values.items():
            columns[name] = encode(core, name, DEFAULTS[name] if value is None else value)
        stamp = now()
        await tx.execute("tenant_update", id=tenant_id, now=stamp, **columns)
        await _on_endpoint_written(tx, row, columns, stamp)
        await _on_limits_set(tx, tenant_id, columns)
    auth.forget(core)
    core.changed(tenant_id)
    return await get_tenant(core, tenant_id)


def _in_use_detail(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"queued": 0, "deferred": 0, "sending": 0}
    for r in rows:
        counts[r["status"]] = int(r["n"])
    return counts


async def delete_tenant(core: Core, tenant_id: str, *, force: bool = False) -> dict[str, int]:
    """DELETE /tenant/{id}: 409 ``tenant_in_use`` while messages are pending, unless forced."""
    stamp = now()
    async with core.store.transaction() as tx:
        if await tx.fetch_one("tenant_lock", id=tenant_id) is None:
            raise _not_found(tenant_id)
        pending = _in_use_detail(await tx.fetch("tenant_message_counts", tenant_id=tenant_id))
        if any(pending.values()) and not force:
            raise Conflict(f"tenant '{tenant_id}' still has messages waiting or being sent",
                           code="tenant_in_use", detail=pending)
        counts = await tx.fetch_one("tenant_count_all", tenant_id=tenant_id) or {}
        await tx.execute("tenant_expire_large_files", tenant_id=tenant_id, now=stamp)
        await tx.execute("tenant_delete", id=tenant_id)
    auth.forget(core)
    core.changed(tenant_id)
    return {"accounts": int(counts.get("accounts") or 0),
            "messages": int(counts.get("messages") or 0)}


# --- API keys ------------------------------------------------------------------------------

async def create_api_key(core: Core, tenant_id: str, expires_at: object = None
                         ) -> dict[str, Any]:
    """POST /tenant/{id}/api-key: a new key replaces the old one at once; shown only here."""
    expiry: int | None = None
    if expires_at is not None:
        try:
            expiry = timestamp(expires_at)
        except Bad as bad:
            fail_if([FieldError("expires_at", code, msg) for _, code, msg in bad.items])
        assert expiry is not None
        if expiry <= now():
            fail_if([FieldError("expires_at", "out_of_range", "must be in the future")])
    key = generate_token()
    async with core.store.transaction() as tx:
        if await tx.fetch_one("tenant_lock", id=tenant_id) is None:
            raise _not_found(tenant_id)
        await tx.execute("tenant_set_api_key", id=tenant_id, api_key_hash=hash_api_key(key),
                         expires_at=expiry, now=now())
    auth.forget(core)
    return {"tenant_id": tenant_id, "api_key": key, "expires_at": expiry}


async def revoke_api_key(core: Core, tenant_id: str) -> bool:
    async with core.store.transaction() as tx:
        if await tx.fetch_one("tenant_lock", id=tenant_id) is None:
            raise _not_found(tenant_id)
        changed = await tx.execute("tenant_revoke_api_key", id=tenant_id, now=now())
    auth.forget(core)
    return changed > 0


# --- suspension (api.md §4.6) ---------------------------------------------------------------

_batch_code = string(max_len=64)


def _check_batch(batch_code: object) -> str | None:
    if batch_code is None:
        return None
    try:
        code = _batch_code(batch_code)
    except Bad as bad:
        fail_if([FieldError("batch_code", c, m) for _, c, m in bad.items])
        raise AssertionError("unreachable") from None
    if code == "*":
        fail_if([FieldError("batch_code", "invalid_value", "'*' is not a batch code")])
    return code


async def _set_suspension(core: Core, tenant_id: str, batch_code: object, *, suspend: bool
                          ) -> dict[str, Any]:
    if tenant_id is None or tenant_id == "":
        raise BadRequest("tenant_id is required", code="missing_parameter",
                         detail={"parameter": "tenant_id"})
    if not isinstance(tenant_id, str):
        raise BadRequest("tenant_id must be a string", code="invalid_parameter",
                         detail={"parameter": "tenant_id"})
    code = _check_batch(batch_code)
    async with core.store.transaction() as tx:
        row = await tx.fetch_one("tenant_lock", id=tenant_id)
        if row is None:
            raise _not_found(tenant_id)
        batches: list[str] = json.loads(row["suspended_batches"] or "[]")
        if suspend:
            if code is None:
                batches = ["*"]
            elif "*" not in batches and code not in batches:
                batches = sorted([*batches, code])
        else:
            if code is None:
                batches = []
            elif "*" in batches:
                raise Conflict(f"tenant '{tenant_id}' is suspended as a whole; activate it "
                               "without a batch code", code="all_batches_suspended",
                               detail={"tenant_id": tenant_id})
            else:
                batches = [b for b in batches if b != code]
        await tx.execute("tenant_set_suspended", id=tenant_id,
                         suspended_batches=json.dumps(batches), now=now())
    pending = await core.store.fetch_value("tenant_pending_messages", tenant_id=tenant_id,
                                           batch_code=code)
    if not suspend:
        core.wake(tenant_id)
    return {"tenant_id": tenant_id, "batch_code": code, "suspended_batches": batches,
            "pending_messages": int(pending or 0)}


async def suspend(core: Core, tenant_id: str, batch_code: str | None) -> dict[str, Any]:
    return await _set_suspension(core, tenant_id, batch_code, suspend=True)


async def activate(core: Core, tenant_id: str, batch_code: str | None) -> dict[str, Any]:
    return await _set_suspension(core, tenant_id, batch_code, suspend=False)


async def tenant_for_reports(core: Core, tenant_id: str) -> dict[str, Any]:
    """Internal: the row with ``client_auth``, ``signing_secret`` and ``large_file_config``
    decrypted (for the reporter and endpoint fetches). Never return this to a client."""
    row = dict(await _fetch(core, tenant_id))
    auth_text = row["client_auth"]
    row["client_auth"] = core.keyring.decrypt_json(auth_text) if auth_text else {"method": "none"}
    secret = row["signing_secret"]
    row["signing_secret"] = core.keyring.decrypt(secret) if secret else None
    lfc = row["large_file_config"]
    row["large_file_config"] = core.keyring.decrypt_json(lfc) if lfc else None
    row["rate_limits"] = _load_json(row["rate_limits"], None)
    row["suspended_batches"] = _load_json(row["suspended_batches"], [])
    row["active"] = bool(row["active"])
    row.pop("api_key_hash", None)
    return row
