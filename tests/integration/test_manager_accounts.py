"""SMTP accounts: field rules, TLS resolution, replace/patch semantics, forced deletion (T17)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest

from mail_proxy.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from mail_proxy.manager import accounts, tenants
from mail_proxy.manager.core import ADMIN, Core, Principal
from mail_proxy.security.crypto import KeyRing, generate_key

ME = Principal("tenant", tenant_id="acme", name="tenant")


@pytest.fixture
async def core(tmp_path: Any) -> AsyncIterator[Core]:
    c = await Core.open(f"sqlite://{tmp_path / 'db.sqlite'}", KeyRing([generate_key()]))
    await tenants.put_tenant(c, {"id": "acme"}, ADMIN)
    yield c
    await c.close()


async def raw(core: Core, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with aiosqlite.connect(core.store.path) as db:  # type: ignore[attr-defined]
        cursor = await db.execute(sql, params)
        rows = list(await cursor.fetchall())
        await db.commit()
    return rows


async def add_message(core: Core, mid: str, status: str, account: str = "smtp1") -> None:
    await raw(core, "INSERT INTO messages (tenant_id, id, account_id, status, priority, "
              "created_at, updated_at, next_attempt_at, smtp_message_id, payload) "
              "VALUES ('acme', ?, ?, ?, 2, 1, 1, 5, '<x@y>', '{}')", mid, account, status)


def fields_of(exc: ValidationFailed) -> dict[str, str]:
    return {f.field: f.code for f in exc.fields}


async def put(core: Core, **body: Any) -> tuple[dict[str, Any], bool]:
    base = {"id": "smtp1", "host": "smtp.acme.test", "port": 587}
    return await accounts.put_account(core, {**base, **body}, ADMIN, "acme")


@pytest.mark.parametrize(("port", "tls_mode", "use_tls", "expected"), [
    (587, None, None, "starttls"), (465, None, None, "tls"), (25, "none", None, "none"),
    (465, "starttls", None, "starttls"), (587, None, True, "starttls"),
    (465, None, True, "tls"), (465, None, False, "none"), (587, "tls", True, "tls"),
    (25, "none", False, "none"), (587, "tls", False, "conflict"),
    (587, "none", True, "conflict"),
])
async def test_tls_resolution(core: Core, port: int, tls_mode: str | None,
                              use_tls: bool | None, expected: str) -> None:
    body: dict[str, Any] = {"port": port}
    if tls_mode is not None:
        body["tls_mode"] = tls_mode
    if use_tls is not None:
        body["use_tls"] = use_tls
    if expected == "conflict":
        with pytest.raises(ValidationFailed) as err:
            await put(core, **body)
        assert fields_of(err.value) == {"use_tls": "conflict"}
        return
    rep, _ = await put(core, **body)
    assert rep["tls_mode"] == expected and rep["use_tls"] is (expected != "none")


async def test_patch_keeps_or_rederives_tls(core: Core) -> None:
    await put(core, port=465)
    rep = await accounts.patch_account(core, "acme", "smtp1", {"port": 587}, ADMIN)
    assert rep["tls_mode"] == "tls"  # neither field: stored mode kept despite the port
    rep = await accounts.patch_account(core, "acme", "smtp1", {"use_tls": True}, ADMIN)
    assert rep["tls_mode"] == "starttls"
    rep = await accounts.patch_account(core, "acme", "smtp1", {"use_tls": False}, ADMIN)
    assert rep["tls_mode"] == "none"
    rep = await accounts.patch_account(core, "acme", "smtp1", {"tls_mode": None,
                                                               "port": 465}, ADMIN)
    assert rep["tls_mode"] == "tls"


async def test_every_wrong_type_is_listed(core: Core) -> None:
    body = {"id": "smtp1", "host": 12, "port": "587", "user": 1, "password": 2,
            "tls_mode": "ssl", "use_tls": "yes", "tls_verify": 0, "tls_ca_file": "rel.pem",
            "max_connections": 51, "batch_size": 0, "ttl": 29, "limit_per_minute": -1,
            "limit_per_hour": 1.5, "limit_per_day": "x", "limit_behavior": "drop",
            "is_pec": 1, "imap_host": "bad host", "imap_port": 70000, "imap_user": [],
            "imap_password": {}, "imap_folder": "", "imap_tls": None, "what": 1}
    with pytest.raises(ValidationFailed) as err:
        await accounts.put_account(core, body, ADMIN, "acme")
    got = fields_of(err.value)
    assert got == {
        "host": "invalid_type", "port": "invalid_type", "user": "invalid_type",
        "password": "invalid_type", "tls_mode": "invalid_value", "use_tls": "invalid_type",
        "tls_verify": "invalid_type", "tls_ca_file": "invalid_value",
        "max_connections": "out_of_range", "batch_size": "out_of_range",
        "ttl": "out_of_range", "limit_per_minute": "out_of_range",
        "limit_per_hour": "invalid_type", "limit_per_day": "invalid_type",
        "limit_behavior": "invalid_value", "is_pec": "invalid_type",
        "imap_host": "invalid_value", "imap_port": "out_of_range",
        "imap_user": "invalid_type", "imap_password": "invalid_type",
        "imap_folder": "invalid_value", "what": "unknown_field"}
    with pytest.raises(ValidationFailed) as err:
        await accounts.put_account(core, {}, ADMIN, "acme")
    assert fields_of(err.value) == {"id": "required", "host": "required", "port": "required"}
    with pytest.raises(ValidationFailed) as err:
        await accounts.put_account(core, {"id": "bad id", "host": "h", "port": 1}, ADMIN,
                                   "acme")
    assert fields_of(err.value) == {"id": "invalid_value"}
    with pytest.raises(ValidationFailed):
        await accounts.put_account(core, ["x"], ADMIN, "acme")


async def test_aliases_and_pec_rule(core: Core) -> None:
    with pytest.raises(ValidationFailed) as err:
        await put(core, is_pec_account=True)
    assert fields_of(err.value) == {"imap_host": "required"}
    rep, _ = await put(core, is_pec_account=True, imap_host="imap.acme.test", imap_ssl=False)
    assert rep["is_pec"] is True and rep["imap_tls"] is False
    with pytest.raises(ValidationFailed) as err:
        await put(core, is_pec=True, is_pec_account=False, imap_host="i.test")
    assert fields_of(err.value) == {"is_pec_account": "conflict"}


async def test_create_replace_and_secrets(core: Core) -> None:
    rep, created = await put(core, user="mailer", password="pw1", imap_password="ipw",
                             limit_per_day=10, tls_verify=False)
    assert created and rep["has_password"] and rep["has_imap_password"]
    assert "pw1" not in json.dumps(rep) and rep["user"] == "mailer"
    stored = await raw(core, "SELECT password, imap_password FROM accounts")
    assert stored[0][0].startswith("ENC:") and stored[0][1].startswith("ENC:")
    await raw(core, "UPDATE accounts SET throttle_level = 2, created_at = 7")
    rep, created = await put(core, port=465)
    assert not created and rep["limit_per_day"] is None and rep["tls_verify"] is True
    assert rep["user"] is None and rep["has_password"] and rep["has_imap_password"]
    assert rep["throttle_level"] == 2 and rep["created_at"] == 7 and rep["tls_mode"] == "tls"
    secrets = await accounts.account_secrets(core, "acme", "smtp1")
    assert secrets["password"] == "pw1" and secrets["imap_password"] == "ipw"
    rep, _ = await put(core, password=None, user="u2")
    assert rep["has_password"] is False and rep["has_imap_password"] is True
    secrets = await accounts.account_secrets(core, "acme", "smtp1")
    assert secrets["imap_user"] == "u2" and secrets["password"] is None


async def test_patch_semantics(core: Core) -> None:
    await put(core, max_connections=5, tls_verify=False, password="pw")
    rep = await accounts.patch_account(core, "acme", "smtp1",
                                       {"max_connections": None, "tls_verify": None}, ADMIN)
    assert rep["max_connections"] is None and rep["tls_verify"] is True
    assert rep["has_password"] is True and rep["port"] == 587
    with pytest.raises(ValidationFailed) as err:
        await accounts.patch_account(core, "acme", "smtp1",
                                     {"host": None, "id": "other", "tenant_id": "x"}, ADMIN)
    assert fields_of(err.value) == {"host": "invalid_type", "id": "conflict",
                                    "tenant_id": "conflict"}
    with pytest.raises(NotFound) as nf:
        await accounts.patch_account(core, "acme", "nope", {"port": 25}, ADMIN)
    assert nf.value.code == "account_not_found"
    with pytest.raises(NotFound) as nf:
        await accounts.put_account(core, {"id": "a", "host": "h", "port": 1}, ADMIN, "ghost")
    assert nf.value.code == "tenant_not_found"


async def test_tenant_key_rules(core: Core) -> None:
    rep, _ = await accounts.put_account(core, {"id": "smtp1", "host": "h.test", "port": 25},
                                        ME, None)
    assert rep["tenant_id"] == "acme"
    with pytest.raises(Forbidden) as err:
        await accounts.put_account(core, {"id": "smtp1", "host": "h", "port": 25,
                                          "tls_ca_file": "/ca.pem"}, ME, None)
    assert err.value.code == "forbidden_field" and err.value.detail == {"field": "tls_ca_file"}
    await accounts.patch_account(core, "acme", "smtp1", {"tls_ca_file": "/ca.pem"}, ADMIN)
    rep, _ = await accounts.put_account(core, {"id": "smtp1", "host": "h", "port": 25}, ME,
                                        None)
    assert rep["tls_ca_file"] == "/ca.pem"  # a tenant's replace cannot clear the admin's CA
    with pytest.raises(Forbidden) as err:
        await accounts.put_account(core, {"id": "x", "host": "h", "port": 25,
                                          "tenant_id": "beta"}, ME, None)
    assert err.value.code == "tenant_mismatch"
    with pytest.raises(BadRequest) as bad:
        await accounts.put_account(core, {"id": "x", "host": "h", "port": 25}, ADMIN, None)
    assert bad.value.code == "missing_parameter"
    core.settings.tenant_can_manage_accounts = False
    with pytest.raises(Forbidden) as err:
        await accounts.patch_account(core, "acme", "smtp1", {"port": 26}, ME)
    assert err.value.code == "admin_required"
    with pytest.raises(Forbidden):
        await accounts.delete_account(core, "acme", "smtp1", principal=ME)


async def test_list_get_and_default(core: Core) -> None:
    await tenants.put_tenant(core, {"id": "beta"}, ADMIN)
    await put(core)
    await put(core, id="a0")
    await accounts.put_account(core, {"id": "z", "host": "h", "port": 25}, ADMIN, "beta")
    await tenants.patch_tenant(core, "acme", {"default_account_id": "smtp1"}, ADMIN)
    listed = await accounts.list_accounts(core)
    assert [(a["tenant_id"], a["id"]) for a in listed] == [("acme", "a0"), ("acme", "smtp1"),
                                                           ("beta", "z")]
    assert [a["is_default"] for a in listed] == [False, True, False]
    assert len(await accounts.list_accounts(core, "acme")) == 2
    with pytest.raises(NotFound):
        await accounts.get_account(core, "beta", "smtp1")  # scoped by tenant
    with pytest.raises(NotFound):
        await accounts.list_accounts(core, "ghost")


@pytest.mark.parametrize("base_url", [None, "https://app.acme.test"])
async def test_delete_in_use_and_forced(core: Core, base_url: str | None) -> None:
    await tenants.patch_tenant(core, "acme", {"client_base_url": base_url}, ADMIN)
    await put(core)
    await put(core, id="other")
    await tenants.patch_tenant(core, "acme", {"default_account_id": "smtp1"}, ADMIN)
    for mid, status in (("q1", "queued"), ("q2", "queued"), ("d1", "deferred"),
                        ("s1", "sending"), ("t1", "sent")):
        await add_message(core, mid, status)
    await add_message(core, "o1", "queued", account="other")
    with pytest.raises(Conflict) as err:
        await accounts.delete_account(core, "acme", "smtp1")
    assert err.value.code == "account_in_use"
    assert err.value.detail == {"queued": 2, "deferred": 1, "sending": 1}
    assert await accounts.delete_account(core, "acme", "smtp1", force=True) == 3
    rows = dict(await raw(core, "SELECT id, status FROM messages"))
    assert rows == {"q1": "cancelled", "q2": "cancelled", "d1": "cancelled",
                    "s1": "sending", "t1": "sent", "o1": "queued"}
    detail = await raw(core, "SELECT last_error_code, next_attempt_at, finished_at, settled_at "
                       "FROM messages WHERE id = 'q1'")
    code, next_at, finished, settled = detail[0]
    assert code == "cancelled" and next_at is None and finished is not None
    assert (settled is None) is (base_url is not None)
    events = await raw(core, "SELECT event_type, metadata, reportable, description "
                       "FROM message_events")
    assert len(events) == 3
    assert json.loads(events[0][1]) == {"code": "cancelled", "cause": "account_deleted"}
    assert events[0][2] == (1 if base_url else 0)
    assert events[0][3] == "cancelled: account 'smtp1' was deleted"
    assert (await tenants.get_tenant(core, "acme"))["default_account_id"] is None
    with pytest.raises(NotFound):
        await accounts.get_account(core, "acme", "smtp1")
    with pytest.raises(NotFound):
        await accounts.delete_account(core, "acme", "smtp1")
    assert await accounts.delete_account(core, "acme", "other", force=True) == 1


WEIRD: list[Any] = [None, 10**40, -(10**30), True, False, 0, -1, 1.5, float("nan"),
                    float("inf"), "", "x", "/abs", [], [1], {}, {"a": 1}, "x" * 5000]


async def test_any_json_value_is_accepted_or_422(core: Core) -> None:
    """Decoded JSON of any type in any field never produces anything but a 422."""
    names = [*accounts.CHECKS, *accounts.ALIASES, "id", "tenant_id"]
    for name in names:
        for value in WEIRD:
            body = {"id": "fz", "host": "h.test", "port": 25, name: value}
            try:
                await accounts.put_account(core, body, ADMIN, None if name == "tenant_id"
                                           else "acme")
                await accounts.patch_account(core, "acme", "fz", {name: value}, ADMIN)
            except (ValidationFailed, NotFound, BadRequest):
                pass
            except Forbidden:
                pytest.fail(f"{name}={value!r}: admin got 403")
