"""Per-tenant suppression lists (enterprise.md §2, data.md §2.9).

Addresses are compared and stored as lower-cased addr-specs, the domain in its U-label form
(mail_proxy/idn.py), so that every spelling of one domain finds the same entry. Entries come
from hard bounces (:func:`record_bounce`, used by the bounce poller inside its own
transaction) or by hand.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from mail_proxy.errors import BadRequest, FieldError, NotFound
from mail_proxy.idn import address_forms
from mail_proxy.jsonfast import loads_strict
from mail_proxy.manager.core import Core, Principal, now, upsert
from mail_proxy.manager.fields import (
    Bad,
    address,
    fail_if,
    nullable,
    query_integer,
    read_body,
    require_object,
    scoped_tenant,
    string,
)
from mail_proxy.store.base import Transaction

MAX_PAGE = 1000
_CHECKS = {"address": address, "reason": nullable(string(max_len=1000))}


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"parameter '{name}' {message}", code="invalid_parameter",
                      detail={"parameter": name})


async def _require_tenant(core: Core, tenant_id: str) -> None:
    if await core.store.fetch_one("tenant_get", id=tenant_id) is None:
        raise NotFound(f"tenant '{tenant_id}' does not exist", code="tenant_not_found",
                       detail={"tenant_id": tenant_id})


def _cursor(cursor: object) -> str:
    if cursor is None or cursor == "":
        return ""
    try:
        assert isinstance(cursor, str)
        after = loads_strict(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["a"]
        assert isinstance(after, str)
        return after
    except (AssertionError, binascii.Error, ValueError, KeyError, TypeError):
        raise _bad("cursor", "cannot be decoded") from None


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    return {"address": row["address"], "reason": row["reason"], "source": row["source"],
            "bounce_status": row["bounce_status"], "created_at": row["created_at"]}


async def list_suppressions(core: Core, tenant_id: str, *, address_filter: object = None,
                            limit: object = 100, cursor: object = None) -> dict[str, Any]:
    """GET /suppressions: ordered by address, ``next_cursor`` null on the last page."""
    limit = query_integer(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise _bad("limit", f"must be an integer between 1 and {MAX_PAGE}")
    wanted = None
    if address_filter is not None:
        try:
            wanted = address(address_filter)
        except Bad:
            raise _bad("address", "is not a valid e-mail address") from None
    await _require_tenant(core, tenant_id)
    after = _cursor(cursor)
    forms = address_forms(wanted) if wanted is not None else (None, None)
    rows = await core.store.fetch("suppression_page", tenant_id=tenant_id, after=after,
                                  address=forms[0], limit=limit + 1)
    if not rows and forms[1] != forms[0]:  # an entry stored in A-label form before
        rows = await core.store.fetch("suppression_page", tenant_id=tenant_id, after=after,
                                      address=forms[1], limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        raw = json.dumps({"a": rows[-1]["address"]}).encode()
        next_cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return {"suppressions": [_entry(r) for r in rows], "next_cursor": next_cursor}


async def add_suppression(core: Core, body: object, principal: Principal | None,
                          tenant_id: str | None = None) -> tuple[dict[str, Any], bool]:
    """POST /suppressions: (entry, created). An existing entry keeps its source; its reason
    is replaced when the body carries ``reason``."""
    data = require_object(body)
    body_tenant = data.get("tenant_id")
    if body_tenant is not None and not isinstance(body_tenant, str):
        fail_if([FieldError("tenant_id", "invalid_type", "must be a string")])
    if body_tenant is not None and tenant_id is not None and body_tenant != tenant_id:
        raise BadRequest("'tenant_id' is given in the query and in the body with different "
                         "values", code="conflicting_parameters")  # api.md §1.1
    tid = scoped_tenant(principal, body_tenant or tenant_id)
    errors: list[FieldError] = []
    values = read_body(data, _CHECKS, errors, extra=("tenant_id",))
    if "address" not in data:
        errors.append(FieldError("address", "required", "is required"))
    fail_if(errors)
    await _require_tenant(core, tid)
    addr, ascii_form = address_forms(values["address"])

    async def attempt() -> tuple[dict[str, Any], bool]:
        nonlocal addr
        async with core.store.transaction() as tx:
            row = await tx.fetch_one("suppression_get", tenant_id=tid, address=addr)
            if row is None and ascii_form != addr:  # stored in A-label form before
                row = await tx.fetch_one("suppression_get", tenant_id=tid, address=ascii_form)
                if row is not None:
                    addr = ascii_form
            if row is None:
                await tx.execute("suppression_add_manual", tenant_id=tid, address=addr,
                                 reason=values.get("reason"), now=now())
            elif "reason" in values:
                await tx.execute("suppression_set_reason", tenant_id=tid, address=addr,
                                 reason=values["reason"])
            fresh = await tx.fetch_one("suppression_get", tenant_id=tid, address=addr)
        assert fresh is not None
        return _entry(fresh), row is None

    answer = await upsert(attempt)
    core.changed(tid)  # the next enqueue checks the tenant's list
    return answer


async def remove_suppression(core: Core, tenant_id: str, address_text: object) -> bool:
    """DELETE /suppressions/{address}: True when an entry was removed."""
    try:
        addr = address(address_text)
    except Bad as bad:
        fail_if([FieldError("address", c, m) for _, c, m in bad.items])
        raise AssertionError("unreachable") from None
    await _require_tenant(core, tenant_id)
    removed = 0
    async with core.store.transaction() as tx:
        for form in dict.fromkeys(address_forms(addr)):
            removed += await tx.execute("suppression_remove", tenant_id=tenant_id, address=form)
    return removed > 0


async def suppressed_among(core: Core, tenant_id: str, addresses: Iterable[str]) -> set[str]:
    """The lower-cased addresses of ``addresses`` that the tenant suppresses.

    Empty while ``suppression_enabled`` is false, so callers cannot forget the switch.
    """
    if not core.settings.suppression_enabled:
        return set()
    given = {a.strip().lower() for a in addresses if isinstance(a, str)}
    if not given:
        return set()
    # an address matches its entry in any spelling of its domain: U-label (how entries are
    # stored), A-label (how the envelope names it, and how older entries may be stored)
    forms = {a: address_forms(a) for a in given}
    wanted = sorted({form for pair in forms.values() for form in pair})
    rows = await core.store.fetch("suppression_among", tenant_id=tenant_id, addresses=wanted)
    listed = {r["address"] for r in rows}
    return {a for a, pair in forms.items() if listed.intersection(pair)}


async def record_bounce(tx: Transaction, *, tenant_id: str, address_text: str,
                        reason: str | None, bounce_status: str | None,
                        message_pk: int | None) -> bool:
    """Add a hard-bounce entry inside the caller's transaction; False if already listed."""
    changed = await tx.execute("suppression_add_bounce", tenant_id=tenant_id,
                               address=address_forms(address_text)[0], reason=reason,
                               bounce_status=bounce_status, message_pk=message_pk, now=now())
    return changed > 0
