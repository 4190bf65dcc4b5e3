"""Command log: one row per state-changing request, with actor, masked payload, status."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import LiveServer


async def _rows(client: Any, live: LiveServer, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/command-log", params={"limit": "1000", **params},
                              headers={"X-API-Token": live.admin_token})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["commands"]
    return rows


async def test_mutations_are_recorded(live: LiveServer, client: Any) -> None:
    own = {"X-API-Token": live.keys["acme"]}
    before = len(await _rows(client, live))
    await client.patch("/tenant/acme", json={"client_auth": {"method": "bearer",
                                                             "token": "t" * 30}}, headers=own)
    await client.post("/commands/run-now", json={}, headers=own)  # not recorded
    await client.get("/tenant/acme", headers=own)  # reads are not recorded
    await client.patch("/tenant/acme", json={"active": False}, headers=own)  # refused: 403
    await client.post("/tenant", json={"id": "x"}, headers={"X-API-Token": "wrong-token"})
    rows = await _rows(client, live)
    new = rows[before:]
    assert [(r["endpoint"], r["actor"], r["tenant_id"], r["response_status"]) for r in new] == [
        ("PATCH /tenant/{id}", "tenant", "acme", 200),
        ("PATCH /tenant/{id}", "tenant", "acme", 403)]
    assert new[0]["payload"] == {"client_auth": {"method": "bearer", "token": "***"},
                                 "id": "acme"}
    assert new[1]["response_body"]["code"] == "forbidden_field"


async def test_admin_rows_and_filters(live: LiveServer, client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    answer = await client.post("/suppressions", json={"tenant_id": "other",
                                                      "address": "Bob@Example.com"},
                               headers=admin)
    assert answer.status_code == 201
    rows = await _rows(client, live, endpoint="suppressions", tenant_id="other")
    assert rows[-1]["actor"] == "admin" and rows[-1]["response_status"] == 201
    export = await client.get("/command-log/export", params={"tenant_id": "other"},
                              headers=admin)
    assert export.json()["truncated"] is False
    assert export.json()["commands"][-1]["endpoint"] == "POST /suppressions"



async def test_switching_the_log_off_is_itself_recorded(live: LiveServer, client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    before = len(await _rows(client, live))
    try:
        off = await client.patch("/instance", json={"command_log_enabled": False},
                                 headers=admin)
        assert off.status_code == 200, off.text
        await client.patch("/instance", json={"max_recipients": 100}, headers=admin)
    finally:
        on = await client.patch("/instance", json={"command_log_enabled": None,
                                                   "max_recipients": None}, headers=admin)
        assert on.status_code == 200, on.text
    new = await _rows(client, live)
    assert [(r["endpoint"], r["payload"]) for r in new[before:]] == [
        ("PATCH /instance", {"command_log_enabled": False}),
        ("PATCH /instance", {"command_log_enabled": None, "max_recipients": None})]


async def test_an_admin_batch_naming_its_tenant_per_message_is_that_tenants(
        live: LiveServer, client: Any) -> None:
    """Operations hunt: with the tenant only inside the messages, the row had no tenant and
    `GET /command-log?tenant_id=` (and the CLI's --tenant) missed every enqueue."""
    admin = {"X-API-Token": live.admin_token}
    message = {"from": "a@acme.test", "to": ["x@example.com"], "subject": "s",
               "body": "b", "account_id": "smtp1", "tenant_id": "acme"}
    answer = await client.post("/commands/add-messages", headers=admin, json={"messages": [
        {**message, "id": "cl-1"}, {**message, "id": "cl-2"}]})
    assert answer.status_code == 200, answer.text
    rows = await _rows(client, live, tenant_id="acme", endpoint="add-messages")
    assert rows and rows[-1]["payload"]["messages"][0]["id"] == "cl-1"
    assert rows[-1]["tenant_id"] == "acme"
