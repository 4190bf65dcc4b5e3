"""Ids, hosts and URLs are matched whole (api.md §6.1, §7.1): Python's ``$`` also matches
before a final newline, which once let ``"api\\n"`` become a tenant id. And the messages
routes answer 404 ``tenant_not_found`` for a tenant that does not exist, like /accounts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import LiveServer


def fields(answer: Any) -> set[str]:
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error"
    return {item["field"] for item in answer.json()["detail"]}


@pytest.mark.parametrize("tenant_id", ["api\n", "acme\n"])
async def test_tenant_id_with_a_trailing_line_break_is_refused(
        live: LiveServer, client: Any, tenant_id: str) -> None:
    answer = await client.post("/tenant", headers=live.admin(),
                               json={"id": tenant_id, "name": "x"})
    assert fields(answer) == {"id"}
    listed = await client.get("/tenants", headers=live.admin())
    assert tenant_id not in [t["id"] for t in listed.json()["tenants"]]


async def test_urls_hosts_and_account_ids_with_a_trailing_newline_are_refused(
        live: LiveServer, client: Any) -> None:
    answer = await client.patch("/tenant/acme", headers=live.admin(),
                                json={"client_base_url": "https://app.acme.test\n",
                                      "default_account_id": "smtp1\n"})
    assert fields(answer) == {"client_base_url", "default_account_id"}
    answer = await client.post("/account", headers=live.admin(), json={
        "tenant_id": "acme", "id": "anl\n", "host": "smtp.x.test\n", "port": 25,
        "imap_host": "imap.x.test\n"})
    assert fields(answer) == {"id", "host", "imap_host"}
    # a scoped IPv6 address carries free text after '%': no line break or blank there either
    answer = await client.post("/account", headers=live.admin(), json={
        "tenant_id": "acme", "id": "scoped", "host": "fe80::1%eth0\n", "port": 25})
    assert fields(answer) == {"host"}
    accounts = await client.get("/accounts?tenant_id=acme", headers=live.admin())
    assert [a["id"] for a in accounts.json()["accounts"]] == ["smtp1"]
    # the same values without the newline are fine
    answer = await client.post("/account", headers=live.admin(), json={
        "tenant_id": "other", "id": "anl", "host": "smtp.x.test", "port": 25})
    assert answer.status_code == 201, answer.text
    answer = await client.patch("/tenant/other", headers=live.admin(),
                                json={"client_base_url": "https://app.other.test/x/y-1"})
    assert answer.status_code == 200, answer.text


async def test_unknown_tenant_on_the_messages_routes_is_404(
        live: LiveServer, client: Any) -> None:
    admin = live.admin()
    calls = [("GET", "/messages?tenant_id=nope", None),
             ("POST", "/commands/delete-messages", {"tenant_id": "nope", "ids": ["m1"]}),
             ("POST", "/commands/retry-messages", {"tenant_id": "nope", "ids": ["m1"]}),
             ("POST", "/commands/cleanup-messages?tenant_id=nope", None),
             ("GET", "/accounts?tenant_id=nope", None)]  # the reference answer
    for method, path, body in calls:
        answer = await client.request(method, path, headers=admin, json=body)
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "tenant_not_found"
        assert answer.json()["detail"] == {"tenant_id": "nope"}
    # known tenants, all tenants and a tenant key's own tenant still answer
    assert (await client.get("/messages", headers=admin)).status_code == 200
    assert (await client.get("/messages?tenant_id=acme", headers=admin)).status_code == 200
    own = {"X-API-Token": live.keys["acme"]}
    answer = await client.post("/commands/delete-messages", headers=own, json={"ids": ["m1"]})
    assert answer.json() == {"ok": True, "removed": 0, "not_found": ["m1"], "in_flight": []}
    answer = await client.post("/commands/cleanup-messages", headers=admin)
    assert answer.status_code == 200, answer.text

