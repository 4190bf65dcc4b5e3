"""Tenants, API keys, authentication, suspension and suppression lists on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest

from mail_proxy.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from mail_proxy.manager import auth, suppressions, tenants
from mail_proxy.manager.accounts import put_account
from mail_proxy.manager.core import ADMIN, Core, Principal
from mail_proxy.security.crypto import KeyRing, generate_key

ADMIN_TOKEN = "a" * 32
SECRET = "s" * 40


@pytest.fixture
async def core(tmp_path: Any) -> AsyncIterator[Core]:
    c = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", KeyRing([generate_key()]))
    yield c
    await c.close()


async def raw(core: Core, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Direct SQL for set-up and for looking at what is stored at rest."""
    async with aiosqlite.connect(core.store.path) as db:  # type: ignore[attr-defined]
        cursor = await db.execute(sql, params)
        rows = list(await cursor.fetchall())
        await db.commit()
    return rows


async def add_message(core: Core, tenant: str, mid: str, status: str = "queued",
                      account: str = "smtp1", batch: str | None = None) -> None:
    await raw(core, "INSERT INTO messages (tenant_id, id, account_id, status, priority, "
              "batch_code, created_at, updated_at, smtp_message_id, payload) "
              "VALUES (?, ?, ?, ?, 2, ?, 1, 1, '<x@y>', '{}')", tenant, mid, account, status,
              batch)


def fields_of(exc: ValidationFailed) -> dict[str, str]:
    return {f.field: f.code for f in exc.fields}


async def make(core: Core, tid: str = "acme", **extra: Any) -> tuple[dict[str, Any], str]:
    rep, created, key = await tenants.put_tenant(core, {"id": tid, **extra}, ADMIN)
    assert created and key is not None
    return rep, key


async def test_create_returns_key_and_hides_secrets(core: Core) -> None:
    rep, key = await make(core, name="ACME", client_base_url="https://app.acme.test",
                          client_auth={"method": "bearer", "token": "tok-123"},
                          signing_secret=SECRET, rate_limits={"hourly": 100, "daily": None})
    assert len(key) == 43
    assert rep["client_auth"] == {"method": "bearer", "has_token": True}
    assert rep["has_signing_secret"] is True and rep["has_api_key"] is True
    assert rep["rate_limits"] == {"per_minute": None, "per_hour": 100, "per_day": None}
    assert rep["suspended_batches"] == [] and rep["active"] is True
    assert rep["report"] == {"last_report_at": None, "failures": 0, "backoff_until": None,
                             "dnd_until": None, "pending_events": 0}
    assert "tok-123" not in str(rep) and SECRET not in str(rep)
    stored = await raw(core, "SELECT client_auth, signing_secret, api_key_hash FROM tenants")
    assert stored[0][0].startswith("ENC:") and stored[0][1].startswith("ENC:")
    assert key not in stored[0][2]
    internal = await tenants.tenant_for_reports(core, "acme")
    assert internal["client_auth"]["token"] == "tok-123"
    assert internal["signing_secret"] == SECRET


async def test_every_wrong_type_is_listed(core: Core) -> None:
    body = {"id": 5, "name": 1, "client_base_url": "ftp://x", "client_sync_path": "nope",
            "client_attachment_path": [], "client_auth": "bearer", "signing_secret": "short",
            "rate_limits": {"per_minute": -1, "weekly": 3}, "large_file_config": [],
            "default_account_id": {}, "active": "yes", "colour": "red"}
    with pytest.raises(ValidationFailed) as err:
        await tenants.put_tenant(core, body, ADMIN)
    assert fields_of(err.value) == {
        "id": "invalid_type", "name": "invalid_type", "client_base_url": "invalid_value",
        "client_sync_path": "invalid_value", "client_attachment_path": "invalid_type",
        "client_auth": "invalid_type", "signing_secret": "invalid_value",
        "rate_limits.per_minute": "out_of_range", "rate_limits.weekly": "unknown_field",
        "large_file_config": "invalid_type", "default_account_id": "invalid_type",
        "active": "invalid_type", "colour": "unknown_field"}
    for body in (None, [], "x", 3):
        with pytest.raises(ValidationFailed):
            await tenants.put_tenant(core, body, ADMIN)


@pytest.mark.parametrize("tid", ["list", "Token", "run-now", "-x", "", "a" * 65, "a b"])
async def test_bad_or_reserved_ids(core: Core, tid: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        await tenants.put_tenant(core, {"id": tid}, ADMIN)
    assert err.value.fields[0].field == "id"


@pytest.mark.parametrize(("auth_body", "expected"), [
    ({"method": "bearer"}, {"client_auth.token": "required"}),
    ({"method": "basic", "user": "u"}, {"client_auth.password": "required"}),
    ({"method": "basic"}, {"client_auth.user": "required", "client_auth.password": "required"}),
    ({"method": "digest"}, {"client_auth.method": "invalid_value"}),
    ({}, {"client_auth.method": "required"}),
    ({"method": "none", "token": "x"}, {"client_auth.token": "unknown_field"}),
])
async def test_client_auth_rules(core: Core, auth_body: dict[str, Any],
                                 expected: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed) as err:
        await tenants.put_tenant(core, {"id": "acme", "client_auth": auth_body}, ADMIN)
    assert fields_of(err.value) == expected


async def test_large_file_config(core: Core) -> None:
    cases = [({"action": "rewrite"}, "large_file_config.storage_url"),
             ({"storage_url": "file:///srv/big"}, "large_file_config.public_base_url"),
             ({"max_size_mb": 0}, "large_file_config.max_size_mb"),
             ({"link_expiry_days": 400}, "large_file_config.link_expiry_days"),
             ({"storage_url": "ftp://x/y"}, "large_file_config.storage_url")]
    for lfc, field in cases:
        with pytest.raises(ValidationFailed) as err:
            await tenants.put_tenant(core, {"id": "acme", "large_file_config": lfc}, ADMIN)
        assert field in fields_of(err.value), lfc
    rep, _ = await make(core, large_file_config={
        "enabled": True, "action": "rewrite", "storage_url": "file:///srv/big",
        "public_base_url": "https://files.acme.test", "storage_options": {"key": "k"}})
    lfc_out = rep["large_file_config"]
    assert lfc_out["has_storage_options"] is True and "storage_options" not in lfc_out
    assert lfc_out["max_size_mb"] == 10.0 and lfc_out["link_expiry_days"] == 7
    stored = await raw(core, "SELECT large_file_config FROM tenants")
    assert stored[0][0].startswith("ENC:")


async def test_replace_keeps_secrets_key_and_created_at(core: Core) -> None:
    _, key = await make(core, name="ACME", client_auth={"method": "basic", "user": "app",
                                                        "password": "pw"},
                        signing_secret=SECRET, client_sync_path="/sync")
    await raw(core, "UPDATE tenants SET created_at = 100, suspended_batches = '[\"b1\"]'")
    rep, created, new_key = await tenants.put_tenant(core, {"id": "acme"}, ADMIN)
    assert created is False and new_key is None
    assert rep["name"] is None and rep["client_sync_path"] == "/mail-proxy/sync"
    assert rep["client_auth"] == {"method": "basic", "user": "app", "has_password": True}
    assert rep["has_signing_secret"] is True and rep["created_at"] == 100
    assert rep["suspended_batches"] == ["b1"]
    assert (await auth.authenticate(core, key, ADMIN_TOKEN)).tenant_id == "acme"
    rep, _, _ = await tenants.put_tenant(core, {"id": "acme", "client_auth": None,
                                                "signing_secret": None}, ADMIN)
    assert rep["client_auth"] == {"method": "none"} and rep["has_signing_secret"] is False


async def test_patch_null_semantics_and_conflicts(core: Core) -> None:
    await make(core, name="ACME", client_sync_path="/s", rate_limits={"per_day": 5})
    rep = await tenants.patch_tenant(core, "acme", {"name": None, "client_sync_path": None},
                                     ADMIN)
    assert rep["name"] is None and rep["client_sync_path"] == "/mail-proxy/sync"
    assert rep["rate_limits"] == {"per_minute": None, "per_hour": None, "per_day": 5}
    rep = await tenants.patch_tenant(core, "acme", {"active": False}, ADMIN)
    assert rep["active"] is False and rep["rate_limits"]["per_day"] == 5
    with pytest.raises(ValidationFailed) as err:
        await tenants.patch_tenant(core, "acme", {"id": "other", "name": 3}, ADMIN)
    assert fields_of(err.value) == {"id": "conflict", "name": "invalid_type"}
    with pytest.raises(NotFound) as nf:
        await tenants.patch_tenant(core, "ghost", {"name": "x"}, ADMIN)
    assert nf.value.code == "tenant_not_found"


async def test_default_account_must_exist(core: Core) -> None:
    with pytest.raises(ValidationFailed) as err:
        await tenants.put_tenant(core, {"id": "acme", "default_account_id": "smtp1"}, ADMIN)
    assert fields_of(err.value) == {"default_account_id": "not_found"}
    await make(core)
    with pytest.raises(ValidationFailed):
        await tenants.patch_tenant(core, "acme", {"default_account_id": "smtp1"}, ADMIN)
    await put_account(core, {"id": "smtp1", "host": "localhost", "port": 25}, ADMIN, "acme")
    rep = await tenants.patch_tenant(core, "acme", {"default_account_id": "smtp1"}, ADMIN)
    assert rep["default_account_id"] == "smtp1"


async def test_tenant_key_permissions(core: Core) -> None:
    await make(core)
    await make(core, "beta")
    me = Principal("tenant", tenant_id="acme", name="tenant")
    rep = await tenants.patch_tenant(core, "acme", {"name": "Mine", "signing_secret": SECRET,
                                                    "client_sync_path": "/hook"}, me)
    assert rep["name"] == "Mine"
    for field, value in (("active", False), ("client_base_url", "https://evil.test"),
                         ("rate_limits", None), ("large_file_config", None)):
        with pytest.raises(Forbidden) as err:
            await tenants.patch_tenant(core, "acme", {"name": "x", field: value}, me)
        assert err.value.code == "forbidden_field" and err.value.detail == {"field": field}
    with pytest.raises(Forbidden) as err:
        await tenants.patch_tenant(core, "beta", {"name": "x"}, me)
    assert err.value.code == "tenant_mismatch"
    with pytest.raises(Forbidden) as err:
        await tenants.put_tenant(core, {"id": "gamma"}, me)
    assert err.value.code == "admin_required"


async def test_delete_with_and_without_force(core: Core) -> None:
    await make(core)
    await put_account(core, {"id": "smtp1", "host": "localhost", "port": 25}, ADMIN, "acme")
    await add_message(core, "acme", "m1", "queued")
    await add_message(core, "acme", "m2", "sending")
    await add_message(core, "acme", "m3", "sent")
    await raw(core, "INSERT INTO large_files (tenant_id, storage_url, object_path, filename, "
              "size_bytes, expires_at, created_at) VALUES ('acme', 'file:///x', 'p', 'f', 1, "
              "9999999999, 1)")
    with pytest.raises(Conflict) as err:
        await tenants.delete_tenant(core, "acme")
    assert err.value.code == "tenant_in_use"
    assert err.value.detail == {"queued": 1, "deferred": 0, "sending": 1}
    assert await tenants.delete_tenant(core, "acme", force=True) == {"accounts": 1,
                                                                    "messages": 3}
    assert await raw(core, "SELECT count(*) FROM messages") == [(0,)]
    assert (await raw(core, "SELECT expires_at FROM large_files"))[0][0] < 9999999999
    with pytest.raises(NotFound):
        await tenants.get_tenant(core, "acme")
    await make(core, "idle")
    assert await tenants.delete_tenant(core, "idle") == {"accounts": 0, "messages": 0}


async def test_api_keys_and_authentication(core: Core, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    _, first = await make(core)
    assert await auth.authenticate(core, ADMIN_TOKEN, ADMIN_TOKEN) == ADMIN
    principal = await auth.authenticate(core, first, ADMIN_TOKEN)
    assert principal.kind == "tenant" and principal.tenant_id == "acme"
    out = await tenants.create_api_key(core, "acme")
    assert out["tenant_id"] == "acme" and out["expires_at"] is None
    with pytest.raises(auth.Unauthorized) as err:
        await auth.authenticate(core, first, ADMIN_TOKEN)  # replaced at once
    assert err.value.code == "invalid_token" and err.value.status == 401
    assert (await auth.authenticate(core, out["api_key"], ADMIN_TOKEN)).tenant_id == "acme"
    for bad in (0, "soon", True, 1.0):
        with pytest.raises(ValidationFailed):
            await tenants.create_api_key(core, "acme", bad)
    later = int(__import__("time").time()) + 100
    timed = await tenants.create_api_key(core, "acme", later + 0.7)
    assert timed["expires_at"] == later
    monkeypatch.setattr(auth, "now", lambda: later + 1)
    with pytest.raises(auth.Unauthorized) as err:
        await auth.authenticate(core, timed["api_key"], ADMIN_TOKEN)
    assert err.value.code == "expired_token"
    monkeypatch.undo()
    await tenants.patch_tenant(core, "acme", {"active": False}, ADMIN)
    with pytest.raises(Forbidden) as forbidden:
        await auth.authenticate(core, timed["api_key"], ADMIN_TOKEN)
    assert forbidden.value.code == "tenant_inactive"
    assert await tenants.revoke_api_key(core, "acme") is True
    assert await tenants.revoke_api_key(core, "acme") is False
    assert (await tenants.get_tenant(core, "acme"))["has_api_key"] is False
    with pytest.raises(auth.Unauthorized) as err:
        await auth.authenticate(core, "", ADMIN_TOKEN)
    assert err.value.code == "missing_token"
    with pytest.raises(auth.Unauthorized):
        await auth.authenticate(core, "x", "")  # no admin token: nothing matches
    with pytest.raises(NotFound):
        await tenants.create_api_key(core, "ghost")


async def test_revocation_seen_by_another_process(core: Core, tmp_path: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.2)
    _, key = await make(core)
    other = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", core.keyring)
    try:
        assert (await auth.authenticate(other, key, ADMIN_TOKEN)).tenant_id == "acme"
        await tenants.revoke_api_key(core, "acme")
        await asyncio.sleep(0.3)
        with pytest.raises(auth.Unauthorized):
            await auth.authenticate(other, key, ADMIN_TOKEN)
    finally:
        await other.close()


async def test_list_and_pending_events(core: Core) -> None:
    await make(core, "b")
    await make(core, "a")
    await tenants.patch_tenant(core, "b", {"active": False}, ADMIN)
    await add_message(core, "a", "m1", "sent")
    await raw(core, "INSERT INTO message_events (message_pk, tenant_id, event_type, event_ts, "
              "reportable) VALUES (1, 'a', 'sent', 1, 1)")
    listed = await tenants.list_tenants(core)
    assert [t["id"] for t in listed] == ["a", "b"]
    assert listed[0]["report"]["pending_events"] == 1
    assert [t["id"] for t in await tenants.list_tenants(core, active_only=True)] == ["a"]


async def test_suspend_and_activate(core: Core) -> None:
    await make(core)
    await add_message(core, "acme", "m1", "queued", batch="news")
    await add_message(core, "acme", "m2", "deferred")
    await add_message(core, "acme", "m3", "sent", batch="news")
    out = await tenants.suspend(core, "acme", "news")
    assert out == {"tenant_id": "acme", "batch_code": "news", "suspended_batches": ["news"],
                   "pending_messages": 1}
    assert (await tenants.suspend(core, "acme", "alpha"))["suspended_batches"] == ["alpha",
                                                                                    "news"]
    out = await tenants.suspend(core, "acme", None)
    assert out["suspended_batches"] == ["*"] and out["pending_messages"] == 2
    assert (await tenants.suspend(core, "acme", "x"))["suspended_batches"] == ["*"]
    with pytest.raises(Conflict) as err:
        await tenants.activate(core, "acme", "news")
    assert err.value.code == "all_batches_suspended"
    assert (await tenants.activate(core, "acme", None))["suspended_batches"] == []
    await tenants.suspend(core, "acme", "news")
    assert (await tenants.activate(core, "acme", "news"))["suspended_batches"] == []
    for bad in ("*", 5, "", "x" * 65):
        with pytest.raises(ValidationFailed):
            await tenants.suspend(core, "acme", bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await tenants.suspend(core, "ghost", None)


async def test_suppressions(core: Core) -> None:
    await make(core)
    entry, created = await suppressions.add_suppression(
        core, {"address": " Bob@Example.com ", "reason": "asked"}, ADMIN, "acme")
    assert created and entry["address"] == "bob@example.com" and entry["source"] == "manual"
    entry, created = await suppressions.add_suppression(
        core, {"address": "bob@example.com", "reason": "again"}, ADMIN, "acme")
    assert not created and entry["reason"] == "again"
    me = Principal("tenant", tenant_id="acme", name="tenant")
    for i in range(3):
        await suppressions.add_suppression(core, {"address": f"u{i}@x.test"}, me)
    page = await suppressions.list_suppressions(core, "acme", limit=2)
    assert [s["address"] for s in page["suppressions"]] == ["bob@example.com", "u0@x.test"]
    page = await suppressions.list_suppressions(core, "acme", limit=2,
                                                cursor=page["next_cursor"])
    assert [s["address"] for s in page["suppressions"]] == ["u1@x.test", "u2@x.test"]
    assert page["next_cursor"] is None
    one = await suppressions.list_suppressions(core, "acme", address_filter="U1@x.test")
    assert len(one["suppressions"]) == 1
    assert await suppressions.suppressed_among(core, "acme", ["BOB@example.com", "z@x.test"]
                                               ) == {"bob@example.com"}
    assert await suppressions.remove_suppression(core, "acme", "Bob@Example.com") is True
    assert await suppressions.remove_suppression(core, "acme", "bob@example.com") is False
    core.settings.suppression_enabled = False
    assert await suppressions.suppressed_among(core, "acme", ["u0@x.test"]) == set()
    with pytest.raises(ValidationFailed) as err:
        await suppressions.add_suppression(core, {"address": "nope", "x": 1}, ADMIN, "acme")
    assert fields_of(err.value) == {"address": "invalid_address", "x": "unknown_field"}
    with pytest.raises(Forbidden):
        await suppressions.add_suppression(core, {"address": "a@b.c", "tenant_id": "beta"}, me)
    with pytest.raises(BadRequest):
        await suppressions.add_suppression(core, {"address": "a@b.c"}, ADMIN)
    with pytest.raises(BadRequest):
        await suppressions.list_suppressions(core, "acme", cursor="!!")


WEIRD: list[Any] = [None, 10**40, -(10**30), True, 0, -1, 1.5, float("nan"), "", "x", "/abs", "https://a.test",
                    [], [1], {}, {"a": 1}, {"method": "bearer", "token": 5},
                    {"per_minute": "1"}, {"action": "rewrite", "storage_url": 3},
                    {"storage_options": 5}, "x" * 300]


async def test_any_json_value_is_accepted_or_422(core: Core) -> None:
    await make(core)
    for name in [*tenants.DEFAULTS, "id"]:
        for value in WEIRD:
            try:
                await tenants.put_tenant(core, {"id": "fz", name: value}, ADMIN)
                await tenants.patch_tenant(core, "acme", {name: value}, ADMIN)
            except ValidationFailed:
                pass
    for value in WEIRD:
        for call in (tenants.suspend, tenants.activate):
            try:
                await call(core, "acme", value)
            except (ValidationFailed, Conflict):
                pass
        try:
            await tenants.create_api_key(core, "acme", value)
        except ValidationFailed:
            pass


async def test_suppression_inputs_of_any_type(core: Core) -> None:
    await make(core)
    for value in WEIRD:
        for field in ("address", "reason", "tenant_id"):
            body = {"address": "a@b.test", field: value}
            try:
                await suppressions.add_suppression(core, body, ADMIN, None if field ==
                                                   "tenant_id" else "acme")
            except (ValidationFailed, BadRequest, NotFound):
                pass
        for kwargs in ({"address_filter": value}, {"limit": value}, {"cursor": value}):
            try:
                await suppressions.list_suppressions(core, "acme", **kwargs)
            except BadRequest:
                pass
        try:
            await suppressions.remove_suppression(core, "acme", value)
        except ValidationFailed:
            pass


async def test_removing_the_url_settles_messages_with_pending_events(core) -> None:
    import json as _json

    from mail_proxy.manager import tenants as _tenants
    from mail_proxy.manager.core import ADMIN as _ADMIN
    from tests.support import factories as f

    await f.tenant(core, client_base_url="https://app.acme.test")
    await f.account(core, 2525)
    await f.enqueue(core, f.message(1))
    async with core.store.transaction() as tx:
        row = (await tx.fetch("claim_account", me="w", now=1, lease=120, tenant_id="acme",
                              account_id="main", n=1, suspended=[]))[0]
        await tx.execute("mark_error", pk=row["pk"], me="w", now=1, attempted=0, error="x",
                         code="x", smtp_code=None, tenant_id="acme")
        await tx.execute("event_insert", message_pk=row["pk"], tenant_id="acme",
                         event_type="error", now=1, description="x",
                         metadata=_json.dumps({}), reportable=True)
    await _tenants.patch_tenant(core, "acme", {"client_base_url": None}, _ADMIN)
    msg = await core.store.fetch_one("message_get", tenant_id="acme", id="m-1")
    assert msg["settled_at"] is not None
    pending = await core.store.fetch_value("report_pending_counts")
    assert pending is None


async def test_enqueue_sees_a_change_made_through_the_same_core_at_once(core) -> None:
    """The enqueue cache trusted a tenant read for up to a second even after a change made
    by this very worker: a message went to the old default account, a just-suppressed
    address was accepted, a just-deactivated tenant still stored (API hunt, 2026-11-25)."""
    from mail_proxy.manager import tenants as manager
    from mail_proxy.manager.core import ADMIN
    from mail_proxy.manager.messages import get_message
    from tests.support import factories as f

    await f.tenant(core)
    await f.account(core, 2525, account_id="a1")
    await f.account(core, 2526, account_id="a2")
    await manager.patch_tenant(core, "acme", {"default_account_id": "a1"}, ADMIN)
    await f.enqueue(core, f.message(1))  # the cache now holds acme
    await manager.patch_tenant(core, "acme", {"default_account_id": "a2"}, ADMIN)
    await f.enqueue(core, f.message(2))
    assert (await get_message(core, "acme", "m-2"))["account_id"] == "a2"
    await suppressions.add_suppression(core, {"address": "gone@example.com"}, ADMIN, "acme")
    with pytest.raises(BadRequest) as refused:
        await f.enqueue(core, f.message(3, to=["gone@example.com"]))
    assert refused.value.rejected[0]["code"] == "suppressed"  # type: ignore[attr-defined]
    await manager.patch_tenant(core, "acme", {"active": False}, ADMIN)
    with pytest.raises(BadRequest) as inactive:
        await f.enqueue(core, f.message(4))
    assert inactive.value.rejected[0]["code"] == "tenant_inactive"  # type: ignore[attr-defined]


async def test_a_base_url_with_credentials_is_named_as_such(core) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await tenants.put_tenant(core, {"id": "masky", "client_base_url":
                                        "https://u:pw123@app.test"}, ADMIN)
    message = refused.value.fields[0].message  # type: ignore[attr-defined]
    assert message.startswith("must not carry credentials (user:password@) before its host")
    assert "pw123" not in str(refused.value.fields)  # type: ignore[attr-defined]
