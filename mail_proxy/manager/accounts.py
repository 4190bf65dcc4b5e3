"""SMTP accounts: create/replace, read, patch, delete with T17 cancellation (api.md §6).

Like tenants, writes work on the stored column form: a PATCH starts from the row and
overwrites only the columns of the fields it carries, so untouched passwords stay as they
are encrypted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mail_proxy.errors import BadRequest, Conflict, FieldError, Forbidden, NotFound
from mail_proxy.manager.core import Core, Principal, now, upsert
from mail_proxy.manager.fields import (
    Bad,
    Check,
    absolute_path,
    boolean,
    choice,
    fail_if,
    forbid_fields,
    host,
    identifier,
    integer,
    nullable,
    read_body,
    require_object,
    scoped_tenant,
    string,
)

_RESOLVE_SECONDS = 5.0
# Column defaults of the configurable fields (API name -> value); a replace starts here.
DEFAULTS: dict[str, Any] = {
    "user": None, "password": None, "tls_verify": True, "tls_ca_file": None,
    "max_connections": None, "batch_size": None, "ttl": None, "limit_per_minute": None,
    "limit_per_hour": None, "limit_per_day": None, "limit_behavior": "defer", "is_pec": False,
    "imap_host": None, "imap_port": 993, "imap_user": None, "imap_password": None,
    "imap_folder": "INBOX", "imap_tls": True,
}
SECRETS = ("password", "imap_password")
# What a stored secret is bound to: a tenant key that moves one of these must send the
# secret again (decisions: security.md, "A stored password stays with its destination").
_SMTP_DESTINATION = ("host", "port", "tls_mode", "tls_verify")
_IMAP_DESTINATION = ("imap_host", "imap_port", "imap_tls")
ALIASES = {"is_pec_account": "is_pec", "imap_ssl": "imap_tls"}
_BOOLS = ("tls_verify", "is_pec", "imap_tls")

CHECKS: dict[str, Check] = {
    # host and port are never nullable: null fails with invalid_type.
    "host": host,
    "port": integer(1, 65535),
    "user": nullable(string(max_len=256)),
    "password": nullable(string(max_len=1024)),
    "tls_mode": nullable(choice("starttls", "tls", "none")),
    "use_tls": nullable(boolean),
    "tls_verify": nullable(boolean),
    "tls_ca_file": nullable(absolute_path),
    "max_connections": nullable(integer(1, 50)),
    "batch_size": nullable(integer(1, 1000)),
    "ttl": nullable(integer(30, 3600)),
    "limit_per_minute": nullable(integer(0)),
    "limit_per_hour": nullable(integer(0)),
    "limit_per_day": nullable(integer(0)),
    "limit_behavior": nullable(choice("defer", "reject")),
    "is_pec": nullable(boolean),
    "imap_host": nullable(host),
    "imap_port": nullable(integer(1, 65535)),
    "imap_user": nullable(string(max_len=256)),
    "imap_password": nullable(string(max_len=1024)),
    "imap_folder": nullable(string(max_len=255)),
    "imap_tls": nullable(boolean),
}


def _not_found(tenant_id: str, account_id: str) -> NotFound:
    return NotFound(f"account '{account_id}' does not exist for tenant '{tenant_id}'",
                    code="account_not_found",
                    detail={"tenant_id": tenant_id, "account_id": account_id})


def resolve_tls(values: dict[str, Any], port: int, stored: str | None,
                errors: list[FieldError]) -> str:
    """The stored TLS mode (api.md §6.1); ``stored`` is kept when neither field is sent."""
    mode, use_tls = values.get("tls_mode"), values.get("use_tls")
    if stored is not None and "tls_mode" not in values and "use_tls" not in values:
        return stored
    if mode is not None:
        if use_tls is not None and use_tls != (mode != "none"):
            errors.append(FieldError("use_tls", "conflict",
                                     f"use_tls {str(use_tls).lower()} contradicts tls_mode "
                                     f"'{mode}'"))
        return str(mode)
    if use_tls is False:
        return "none"
    return "tls" if port == 465 else "starttls"


def represent(row: dict[str, Any]) -> dict[str, Any]:
    """The public form of an account row (joined with its tenant's default account)."""
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "host": row["host"],
        "port": row["port"], "user": row["username"],
        "has_password": row["password"] is not None, "tls_mode": row["tls_mode"],
        "use_tls": row["tls_mode"] != "none", "tls_verify": bool(row["tls_verify"]),
        "tls_ca_file": row["tls_ca_file"], "max_connections": row["max_connections"],
        "batch_size": row["batch_size"], "ttl": row["ttl"],
        "limit_per_minute": row["limit_per_minute"], "limit_per_hour": row["limit_per_hour"],
        "limit_per_day": row["limit_per_day"], "limit_behavior": row["limit_behavior"],
        "is_pec": bool(row["is_pec"]), "imap_host": row["imap_host"],
        "imap_port": row["imap_port"], "imap_user": row["imap_user"],
        "has_imap_password": row["imap_password"] is not None,
        "imap_folder": row["imap_folder"], "imap_tls": bool(row["imap_tls"]),
        "is_default": row.get("tenant_default_account_id") == row["id"],
        "throttle_level": row["throttle_level"], "throttle_until": row["throttle_until"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def _check_principal(core: Core, principal: Principal | None, fields: list[str]) -> None:
    if principal is None or not principal.is_tenant:
        return
    if not core.settings.tenant_can_manage_accounts:
        raise Forbidden("tenant keys may not manage accounts on this instance",
                        code="admin_required")
    forbid_fields(fields, [f for f in (*CHECKS, *ALIASES, "id", "tenant_id")
                           if f != "tls_ca_file"], "an account")


def _encode(core: Core, name: str, value: Any) -> Any:
    if name in SECRETS and value is not None:
        return core.keyring.encrypt(value)
    return value


def _columns(core: Core, merged: dict[str, Any]) -> dict[str, Any]:
    """SQL parameters from API-named stored values (``user`` is the column ``username``)."""
    out = dict(merged)
    out["username"] = out.pop("user")
    for name in _BOOLS:
        out[name] = bool(out[name])
    return out


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: row["username" if name == "user" else name] for name in DEFAULTS}
    values.update(host=row["host"], port=row["port"], tls_mode=row["tls_mode"])
    return values


async def _write(core: Core, tenant_id: str, account_id: str, values: dict[str, Any],
                 errors: list[FieldError], principal: Principal | None, *, replace: bool
                 ) -> bool:
    """Merge and store; True when the account was created."""
    created = await upsert(lambda: _write_once(core, tenant_id, account_id, values, errors,
                                               principal, replace=replace))
    core.changed(tenant_id, account_id)
    return created


async def _write_once(core: Core, tenant_id: str, account_id: str, values: dict[str, Any],
                      errors: list[FieldError], principal: Principal | None, *,
                      replace: bool) -> bool:
    async with core.store.transaction() as tx:
        if await tx.fetch_one("account_tenant_exists", tenant_id=tenant_id) is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist", code="tenant_not_found",
                           detail={"tenant_id": tenant_id})
        row = await tx.fetch_one("account_lock", tenant_id=tenant_id, id=account_id)
        if row is None and not replace:
            raise _not_found(tenant_id, account_id)
        old = _stored(row) if row is not None else None
        if replace or old is None:
            merged = {n: _encode(core, n, v) for n, v in DEFAULTS.items()}
            if old is not None:
                for kept in SECRETS:
                    merged[kept] = old[kept]
                if principal is not None and principal.is_tenant:
                    merged["tls_ca_file"] = old["tls_ca_file"]  # not theirs to clear
        else:
            merged = dict(old)
        for name, value in values.items():
            if name in DEFAULTS:
                merged[name] = _encode(core, name, DEFAULTS[name] if value is None else value)
            elif name in ("host", "port"):
                merged[name] = value
        if merged.get("is_pec") and not merged.get("imap_host"):
            errors.append(FieldError("imap_host", "required", "required when is_pec is true"))
        stored_mode = old["tls_mode"] if old is not None and not replace else None
        merged["tls_mode"] = resolve_tls(values, merged["port"], stored_mode, [])
        if old is not None and principal is not None and principal.is_tenant:
            errors.extend(_secrets_moved(old, merged, values))
        fail_if(errors)
        params = _columns(core, merged)
        if row is None:
            await tx.execute("account_insert", tenant_id=tenant_id, id=account_id,
                             now=now(), **params)
        else:
            await tx.execute("account_update", tenant_id=tenant_id, id=account_id,
                             now=now(), **params)
            if any(merged.get(f"limit_per_{w}") for w in ("minute", "hour", "day")):
                await log_past_sends(tx, tenant_id, account_id)
    return row is None


async def log_past_sends(tx: Any, tenant_id: str, account_id: str | None = None) -> None:
    """An account that had no limit (nor its tenant) wrote no ``send_log`` rows; a limit set
    now must still count the sends of the last day (delivery hunt: 5 sent, then a limit of
    2 per hour, and 2 more went out at once). Sends already logged are not logged twice."""
    since = now() - 86400 - 1
    if account_id is None:
        await tx.execute("send_log_backfill_tenant", tenant_id=tenant_id, since=since)
    else:
        await tx.execute("send_log_backfill_account", tenant_id=tenant_id,
                         account_id=account_id, since=since)


def _secrets_moved(old: dict[str, Any], merged: dict[str, Any], values: dict[str, Any]
                   ) -> list[FieldError]:
    """A tenant key that points an account with a stored password at another host or port,
    or at weaker TLS, must send the password again in the same request.

    Otherwise a stolen tenant key could make the worker log in to a server of its own
    choosing with a password the admin set and the key holder was never told: secrets are
    never returned (api.md §1.2), and replaying one to a new destination returns it all
    the same. The IMAP login falls back to the SMTP password (api.md §6.1), so an IMAP
    destination guards that one too when the account has no IMAP password of its own."""
    def moved(fields: tuple[str, ...]) -> list[str]:
        return [f for f in fields if merged.get(f) != old.get(f)]

    errors = []
    smtp = moved(_SMTP_DESTINATION)
    if smtp and old["password"] is not None and "password" not in values:
        errors.append(FieldError(
            "password", "password_required",
            f"send the password again to change {', '.join(smtp)}: a stored password stays "
            "with the destination it was given for"))
    imap = moved(_IMAP_DESTINATION)
    imap_secret = old["imap_password"] is not None or (
        merged.get("imap_password") is None and old["password"] is not None
        and "password" not in values)
    if imap and imap_secret and "imap_password" not in values:
        errors.append(FieldError(
            "imap_password", "password_required",
            f"send imap_password again to change {', '.join(imap)}: a stored password stays "
            "with the destination it was given for"))
    return errors


def _read(data: dict[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    values = read_body(data, CHECKS, errors, aliases=ALIASES, extra=("id", "tenant_id"))
    values.pop("tenant_id", None)
    resolve_tls(values, 0, None, errors)  # only to report a tls_mode/use_tls conflict early
    return values


async def _check_destinations(core: Core, principal: Principal | None,
                              values: dict[str, Any], errors: list[FieldError],
                              stored: dict[str, Any] | None = None) -> None:
    """Hosts a tenant key writes must be public addresses, as attachment URLs must be
    (decisions: security.md): otherwise any tenant could make the worker connect to
    loopback, link-local or internal services and read their banners back in the error
    text. The admin may set any host; ``allow_private_urls`` lifts the rule for tenants."""
    if principal is None or not principal.is_tenant or core.settings.allow_private_urls:
        return
    from mail_proxy.delivery.attachments.guard import (
        DestinationRefused,
        ResolutionFailed,
        checked_address,
    )
    for name, port_name in (("host", "port"), ("imap_host", "imap_port")):
        host = values.get(name)
        field, what = name, "set public hosts"
        if name not in values and values.get(port_name) is not None and stored is not None \
                and values[port_name] != stored.get(port_name):
            # A new port on the stored host is a new destination too: on an account the
            # admin pointed at a local relay it would make the worker a port scanner.
            host, field, what = stored.get(name), port_name, "change the port of a public host"
        if not isinstance(host, str) or not host:
            continue
        try:
            await asyncio.wait_for(checked_address(host, values.get(port_name) or 25,
                                                   allow_private=False), _RESOLVE_SECONDS)
        except DestinationRefused as exc:
            errors.append(FieldError(
                field, "host_not_allowed",
                f"{exc}: a tenant key may only {what} (allow_private_urls is false)"))
        except (ResolutionFailed, TimeoutError):
            pass  # a name that does not resolve yet fails at delivery, with its reason


async def put_account(core: Core, body: object, principal: Principal | None,
                      tenant_id: str | None) -> tuple[dict[str, Any], bool]:
    """POST /account: create (True) or replace (False); omitted fields take defaults."""
    data = require_object(body)
    errors: list[FieldError] = []
    body_tenant = data.get("tenant_id")
    if body_tenant is not None and not isinstance(body_tenant, str):
        fail_if([FieldError("tenant_id", "invalid_type", "must be a string")])
    if body_tenant is not None and tenant_id is not None and body_tenant != tenant_id:
        raise BadRequest("'tenant_id' is given in the query and in the body with different "
                         "values", code="conflicting_parameters")  # api.md §1.1
    tid = scoped_tenant(principal, body_tenant or tenant_id)
    _check_principal(core, principal, list(data))
    account_id = None
    if "id" not in data:
        errors.append(FieldError("id", "required", "is required"))
    else:
        try:
            account_id = identifier(data["id"])
        except Bad as bad:
            errors.extend(FieldError("id", c, m) for _, c, m in bad.items)
    errors.extend(FieldError(name, "required", "is required")
                  for name in ("host", "port") if name not in data)
    values = _read(data, errors)
    values.pop("id", None)
    await _check_destinations(core, principal, values, errors)
    fail_if(errors)
    assert account_id is not None
    created = await _write(core, tid, account_id, values, errors, principal, replace=True)
    return await get_account(core, tid, account_id), created


async def patch_account(core: Core, tenant_id: str, account_id: str, body: object,
                        principal: Principal | None) -> dict[str, Any]:
    """PATCH /account/{id}: present fields replace, ``null`` resets, omitted are kept."""
    tid = scoped_tenant(principal, tenant_id)
    data = require_object(body)
    _check_principal(core, principal, list(data))
    errors: list[FieldError] = []
    if "id" in data and data["id"] != account_id:
        errors.append(FieldError("id", "conflict", "must equal the account id of the path"))
    if "tenant_id" in data and data["tenant_id"] != tid:
        errors.append(FieldError("tenant_id", "conflict", "must equal the tenant_id parameter"))
    values = _read(data, errors)
    values.pop("id", None)
    stored = None
    if principal is not None and principal.is_tenant and ({"port", "imap_port"} & set(values)):
        stored = await core.store.fetch_one("account_get", tenant_id=tid, id=account_id)
    await _check_destinations(core, principal, values, errors, stored)
    fail_if(errors)
    await _write(core, tid, account_id, values, errors, principal, replace=False)
    return await get_account(core, tid, account_id)


async def get_account(core: Core, tenant_id: str, account_id: str) -> dict[str, Any]:
    row = await core.store.fetch_one("account_get", tenant_id=tenant_id, id=account_id)
    if row is None:
        raise _not_found(tenant_id, account_id)
    return represent(row)


async def list_accounts(core: Core, tenant_id: str | None = None) -> list[dict[str, Any]]:
    if tenant_id is not None and await core.store.fetch_one(
            "account_tenant_exists", tenant_id=tenant_id) is None:
        raise NotFound(f"tenant '{tenant_id}' does not exist", code="tenant_not_found",
                       detail={"tenant_id": tenant_id})
    return [represent(r) for r in await core.store.fetch("account_list", tenant_id=tenant_id)]


async def delete_account(core: Core, tenant_id: str, account_id: str, *, force: bool = False,
                         principal: Principal | None = None) -> int:
    """DELETE /account/{id}; returns how many messages were cancelled (T17)."""
    tid = scoped_tenant(principal, tenant_id) if principal is not None else tenant_id
    _check_principal(core, principal, [])
    stamp = now()
    async with core.store.transaction() as tx:
        # tenant, account, then messages by pk: the order the tenant delete, rate-slot
        # reservations and outcomes take them (one order, or PostgreSQL deadlocks them)
        tenant = await tx.fetch_one("tenant_lock_for_change", id=tid)
        if tenant is None or await tx.fetch_one("account_lock", tenant_id=tid,
                                                id=account_id) is None:
            raise _not_found(tid, account_id)
        counts = {"queued": 0, "deferred": 0, "sending": 0}
        for r in await tx.fetch("account_message_counts", tenant_id=tid, account_id=account_id):
            counts[r["status"]] = int(r["n"])
        if any(counts.values()) and not force:
            raise Conflict(f"account '{account_id}' still has messages waiting or being sent",
                           code="account_in_use", detail=counts)
        cancelled = 0
        reportable = tenant["client_base_url"] is not None
        if counts["queued"] or counts["deferred"]:
            await tx.fetch("account_lock_waiting", tenant_id=tid, account_id=account_id)
            text = f"cancelled: account '{account_id}' was deleted"
            meta = json.dumps({"code": "cancelled", "cause": "account_deleted"})
            await tx.execute("account_cancel_events", tenant_id=tid, account_id=account_id,
                             now=stamp, description=text, metadata=meta, reportable=reportable)
            cancelled = await tx.execute("account_cancel_messages", tenant_id=tid,
                                         account_id=account_id, now=stamp, description=text,
                                         settled_at=None if reportable else stamp)
        await tx.execute("account_clear_default", tenant_id=tid, account_id=account_id,
                         now=stamp)
        await tx.execute("account_delete", tenant_id=tid, id=account_id)
    if cancelled and reportable and core.wake_reporter is not None:
        core.wake_reporter(tid)
    core.changed(tenant_id, account_id)
    return cancelled


async def account_secrets(core: Core, tenant_id: str, account_id: str) -> dict[str, Any]:
    """Internal, for the dispatcher and PEC poller: the row with passwords decrypted and the
    IMAP credentials falling back to the SMTP ones. Never return this to a client."""
    row = await core.store.fetch_one("account_lock", tenant_id=tenant_id, id=account_id)
    if row is None:
        raise _not_found(tenant_id, account_id)
    out = dict(row)
    out["user"] = out.pop("username")
    for name in SECRETS:
        out[name] = core.keyring.decrypt(out[name]) if out[name] is not None else None
    for name in _BOOLS:
        out[name] = bool(out[name])
    if out["imap_user"] is None:
        out["imap_user"] = out["user"]
    if out["imap_password"] is None:
        out["imap_password"] = out["password"]
    return out
