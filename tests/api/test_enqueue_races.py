"""add-messages under concurrent HTTP requests to a real worker (the QA reproductions):
racing DELETE /tenant?force=true it refuses the messages and never answers 500 (api.md
§1.3); twenty requests at once do not pass ``max_queued_messages`` (api.md §1.4)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from tests.api.conftest import LiveServer


def _body(tenant_id: str, ids: list[str], **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "messages": [
        {"id": i, "from": "a@x.test", "to": ["b@y.test"], "subject": "s", **fields}
        for i in ids]}


async def test_add_messages_racing_a_forced_tenant_delete_never_answers_500(
        live: LiveServer, client: Any) -> None:
    admin = live.admin()
    for rnd in range(3):
        tenant_id = f"race{rnd}"
        assert (await client.post("/tenant", json={"id": tenant_id}, headers=admin)
                ).status_code == 201
        assert (await client.post("/account", headers=admin, json={
            "id": "a", "tenant_id": tenant_id, "host": "127.0.0.1", "port": 9,
            "tls_mode": "none"})).status_code == 201
        answers = await asyncio.gather(*(
            client.delete(f"/tenant/{tenant_id}?force=true", headers=admin) if i % 2 else
            client.post("/commands/add-messages", json=_body(tenant_id, [f"x{i}"]),
                        headers=admin)
            for i in range(20)))
        seen = Counter((a.status_code, a.json().get("code")) for a in answers)
        assert set(seen) <= {(200, None), (404, "tenant_not_found"), (400, "all_rejected")}, seen
        for a in answers:
            if a.status_code == 400:
                assert [r["code"] for r in a.json()["rejected"]] == ["tenant_not_found"]


async def test_concurrent_add_messages_do_not_pass_the_queue_cap(live: LiveServer,
                                                                 client: Any) -> None:
    admin = live.admin()

    def waiting() -> int:
        return int(live.run(live.core.store.fetch_value("count_waiting")))

    before = waiting()
    cap = before + 10
    assert (await client.patch("/instance", json={"max_queued_messages": cap}, headers=admin)
            ).status_code == 200
    later = int(time.time()) + 3600  # deferred: nothing leaves the queue meanwhile
    try:
        answers = await asyncio.gather(*(
            client.post("/commands/add-messages", headers=admin, json=_body(
                "acme", [f"qc{n}-{j}" for j in range(5)], account_id="smtp1",
                deferred_ts=later))
            for n in range(20)))
    finally:
        await client.patch("/instance", json={"max_queued_messages": None}, headers=admin)
    assert Counter(a.status_code for a in answers) == {200: 2, 429: 18}
    assert waiting() == cap
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["code"] == "queue_full"
    assert "the request's 5 valid messages" in refused.json()["error"]
    assert "Retry-After" in refused.headers
