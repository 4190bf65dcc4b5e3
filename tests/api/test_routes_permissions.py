"""Tenant-key rules beyond the matrix: admin-only fields, tenant_can_manage_accounts,
invisibility of other tenants' resources, create (201) versus replace (200)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import LiveServer


async def test_forbidden_fields(live: LiveServer, client: Any) -> None:
    own = {"X-API-Token": live.keys["acme"]}
    for field, value in (("client_base_url", "https://app.example.com"), ("active", False),
                         ("rate_limits", None), ("large_file_config", None)):
        answer = await client.patch("/tenant/acme", json={field: value}, headers=own)
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden_field")
        assert answer.json()["detail"] == {"field": field}
    answer = await client.post("/account", headers=own, json={
        "id": "ca", "host": "smtp.example.com", "port": 25, "tls_ca_file": "/etc/ca.pem"})
    assert (answer.status_code, answer.json()["code"]) == (403, "forbidden_field")
    answer = await client.patch("/account/smtp1", headers=own, json={"tls_ca_file": None})
    assert (answer.status_code, answer.json()["code"]) == (403, "forbidden_field")


async def test_tenant_cannot_manage_accounts_when_disabled(live: LiveServer,
                                                           client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    own = {"X-API-Token": live.keys["acme"]}
    await client.patch("/instance", json={"tenant_can_manage_accounts": False}, headers=admin)
    try:
        for method, path, body in (("POST", "/account", {"id": "z", "host": "h.example.com",
                                                         "port": 25}),
                                   ("PATCH", "/account/smtp1", {"port": 26}),
                                   ("DELETE", "/account/smtp1", None)):
            answer = await client.request(method, path, json=body, headers=own)
            assert (answer.status_code, answer.json()["code"]) == (403, "admin_required")
        assert (await client.get("/account/smtp1", headers=own)).status_code == 200
    finally:
        await client.patch("/instance", json={"tenant_can_manage_accounts": None},
                           headers=admin)


async def test_other_tenants_resources_are_invisible(live: LiveServer, client: Any) -> None:
    other = {"X-API-Token": live.keys["other"]}
    answer = await client.get("/account/smtp1", headers=other)  # exists only for acme
    assert (answer.status_code, answer.json()["code"]) == (404, "account_not_found")
    listed = await client.get("/accounts", headers=other)
    assert listed.json()["accounts"] == []


async def test_create_then_replace(live: LiveServer, client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    first = await client.post("/tenant", json={"id": "twice", "signing_secret": "s" * 40},
                              headers=admin)
    assert first.status_code == 201 and len(first.json()["api_key"]) == 43
    again = await client.post("/tenant", json={"id": "twice"}, headers=admin)
    assert again.status_code == 200 and "api_key" not in again.json()
    assert again.json()["tenant"]["has_signing_secret"] is True
    account = {"tenant_id": "twice", "id": "a1", "host": "smtp.example.com", "port": 465}
    assert (await client.post("/account", json=account, headers=admin)).status_code == 201
    replaced = await client.post("/account", json=account, headers=admin)
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    assert replaced.json()["account"]["tls_mode"] == "tls"
    key = await client.post("/tenant/twice/api-key", json={}, headers=admin)
    assert key.status_code == 201
    assert (await client.get("/status", headers={"X-API-Token": first.json()["api_key"]})
            ).json()["code"] == "invalid_token"  # the old key stopped at once
    revoked = await client.delete("/tenant/twice/api-key", headers=admin)
    assert revoked.json() == {"ok": True, "tenant_id": "twice", "revoked": True}
