"""A big add-messages request pauses the cyclic garbage collector from parsing to its answer
(docs/performance.md); whatever the outcome, the collector is on again afterwards."""

from __future__ import annotations

import gc
import json
from typing import Any

from tests.api.conftest import LiveServer


def _batch(tenant_id: str, prefix: str, n: int = 300, **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "messages": [
        {"id": f"{prefix}-{i}", "from": "a@acme.test", "to": ["b@example.test"],
         "subject": "s", "body": "x" * 200, **fields} for i in range(n)]}


async def test_the_collector_is_on_after_every_kind_of_big_request(
        live: LiveServer, client: Any) -> None:
    admin = live.admin()
    assert (await client.post("/account", headers=admin, json={
        "id": "gc", "tenant_id": "acme", "host": "127.0.0.1", "port": 9,
        "tls_mode": "none"})).status_code in (200, 201)
    assert gc.isenabled()
    cases = [
        (_batch("acme", "ok", account_id="gc"), admin, 200),
        (_batch("acme", "bad", account_id="gc", to=["not an address"]), admin, 400),
        (_batch("acme", "nokey", account_id="gc"), {}, 401),
        (_batch("ghost", "gone"), admin, 400),
    ]
    for body, headers, status in cases:
        answer = await client.post("/commands/add-messages", json=body, headers=headers)
        assert answer.status_code == status, answer.text[:300]
        assert gc.isenabled()
    raw = json.dumps(_batch("acme", "broken"))[:-20].encode()  # big and not JSON
    answer = await client.post("/commands/add-messages", content=raw,
                               headers={**admin, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_json"
    assert gc.isenabled()
