"""Small helpers that create tenants, accounts and messages through the manager layer."""

from __future__ import annotations

from typing import Any

from mail_proxy.manager import accounts, tenants
from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.manager.enqueue import add_messages


async def tenant(core: Core, tenant_id: str = "acme", **fields: Any) -> dict[str, Any]:
    rep, _, _ = await tenants.put_tenant(core, {"id": tenant_id, **fields}, ADMIN)
    return rep


async def account(core: Core, port: int, tenant_id: str = "acme", account_id: str = "main",
                  **fields: Any) -> dict[str, Any]:
    body = {"id": account_id, "tenant_id": tenant_id, "host": "127.0.0.1", "port": port,
            "tls_mode": "none", **fields}
    rep, _ = await accounts.put_account(core, body, ADMIN, tenant_id)
    return rep


def message(i: int | str, **fields: Any) -> dict[str, Any]:
    return {"id": f"m-{i}", "from": "Sender <sender@acme.test>", "to": [f"rcpt{i}@example.com"],
            "subject": f"Message {i}", "body": f"Hello {i}", **fields}


async def enqueue(core: Core, *msgs: dict[str, Any], tenant_id: str = "acme") -> dict[str, Any]:
    return await add_messages(core, {"tenant_id": tenant_id, "messages": list(msgs)}, ADMIN)
