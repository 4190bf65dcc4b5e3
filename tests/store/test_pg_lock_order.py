"""Concurrent administrative writes on one PostgreSQL database never deadlock each other:
every transaction takes tenants, then accounts, then messages in pk order, then events.

Each case is a pair a concurrency hunt deadlocked (or broke) in most rounds, on two
instances sharing a schema: here two ``Core`` objects (two connection pools) on one schema,
running the two operations at once for a few rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mail_proxy.manager import accounts, messages, tenants
from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.security.crypto import KeyRing
from tests.support import factories as f

ROUNDS = 4


@pytest.fixture
async def two(pg_url: str, keyring: KeyRing) -> AsyncIterator[tuple[Core, Core]]:
    a = await Core.open(pg_url, keyring, name="test")
    b = await Core.open(pg_url, keyring, name="test")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _queued(core: Core, tenant_id: str, account_id: str, n: int, tag: str) -> list[str]:
    """``n`` messages that stay queued (the tenant is suspended, nothing sends them)."""
    batch = [f.message(f"{tag}-{i}", account_id=account_id) for i in range(n)]
    answer = await f.enqueue(core, *batch, tenant_id=tenant_id)
    assert answer["queued"] == n
    return [m["id"] for m in batch]


async def _tenant(core: Core, tenant_id: str, **fields: Any) -> None:
    await f.tenant(core, tenant_id, **fields)
    await tenants.suspend(core, tenant_id, None)


async def test_delete_messages_in_opposite_orders(two: tuple[Core, Core]) -> None:
    a, b = two
    await _tenant(a, "t5")
    await f.account(a, 2525, tenant_id="t5", account_id="g1")
    for rnd in range(ROUNDS):
        ids = await _queued(a, "t5", "g1", 200, f"r{rnd}")
        one, other = await asyncio.gather(messages.delete_messages(a, "t5", ids),
                                          messages.delete_messages(b, "t5", ids[::-1]))
        assert one["removed"] + other["removed"] == 200


async def test_account_delete_against_tenant_delete(two: tuple[Core, Core]) -> None:
    a, b = two
    for rnd in range(ROUNDS):
        tenant_id = f"t1-{rnd}"
        await _tenant(a, tenant_id)
        await f.account(a, 2525, tenant_id=tenant_id, account_id="x1")
        await tenants.patch_tenant(a, tenant_id, {"default_account_id": "x1"}, ADMIN)
        await _queued(a, tenant_id, "x1", 50, "m")
        results = await asyncio.gather(
            accounts.delete_account(a, tenant_id, "x1", force=True),
            tenants.delete_tenant(b, tenant_id, force=True), return_exceptions=True)
        # whichever commits second finds the row gone: 404, never a deadlock
        for result in results:
            if isinstance(result, Exception):
                assert getattr(result, "code", "") in ("account_not_found", "tenant_not_found"), \
                    repr(result)


async def test_account_delete_against_single_message_deletes(two: tuple[Core, Core]) -> None:
    """Unlocked, the cancel events' INSERT ... SELECT read a message another request then
    deleted: a foreign-key error, answered 500, and the account survived."""
    a, b = two
    await _tenant(a, "t4")
    for rnd in range(ROUNDS):
        await f.account(a, 2525, tenant_id="t4", account_id="f1")
        ids = await _queued(a, "t4", "f1", 200, f"r{rnd}")
        singles = [messages.delete_messages(b, "t4", [x]) for x in ids[::7]]
        await asyncio.gather(*singles, accounts.delete_account(a, "t4", "f1", force=True))
        assert await a.store.fetch_one("account_get", tenant_id="t4", id="f1") is None


async def test_url_removal_against_delete_messages(two: tuple[Core, Core]) -> None:
    """The removal takes the tenant, then updates the tenant's pending events, then settles
    its messages; delete-messages takes messages, then their events by cascade."""
    a, b = two
    await _tenant(a, "t3", client_base_url="https://app.t3.test")
    await f.account(a, 2525, tenant_id="t3", account_id="e1")
    for rnd in range(ROUNDS):
        ids = await _queued(a, "t3", "e1", 150, f"r{rnd}")
        async with a.store.transaction() as tx:  # cancelled, each with a pending event
            await tx.execute("account_cancel_events", tenant_id="t3", account_id="e1",
                             now=1, description="x", metadata="{}", reportable=True)
            await tx.execute("account_cancel_messages", tenant_id="t3", account_id="e1",
                             now=1, description="x", settled_at=None)
        await tenants.patch_tenant(a, "t3", {"client_base_url": "https://app.t3.test"}, ADMIN)
        await asyncio.gather(
            messages.delete_messages(b, "t3", ids[::-1][:60]),
            tenants.patch_tenant(a, "t3", {"client_base_url": None}, ADMIN))
        pending = await a.store.fetch("report_pending_counts")
        assert [p for p in pending if p["tenant_id"] == "t3"] == []


async def test_account_delete_against_a_reservation_without_a_tenant_limit(
        two: tuple[Core, Core], pg_url: str) -> None:
    """A reservation for an account limit only holds the account row, then inserts a
    send_log row whose foreign key checks the tenant row with KEY SHARE: a delete holding
    the tenant row FOR UPDATE (instead of FOR NO KEY UPDATE) while waiting for the account
    deadlocked with it (verification hunt: 16 deletes in 40 answered 503)."""
    import asyncpg

    a, _ = two
    await _tenant(a, "t8")
    await f.account(a, 2525, tenant_id="t8", account_id="d1", limit_per_minute=100000)
    [pk] = [r["pk"] for r in await a.store.fetch(
        "message_statuses", tenant_id="t8", ids=await _queued(a, "t8", "d1", 1, "r"))]
    schema = pg_url.split("schema=")[1]
    conn = await asyncpg.connect(pg_url.split("?")[0], server_settings={"search_path": schema})
    try:
        reservation = conn.transaction()
        await reservation.start()  # ratelimit.reserve without a tenant limit, in two steps
        await conn.execute("SELECT pk FROM accounts WHERE tenant_id = 't8' AND id = 'd1' "
                           "FOR UPDATE")
        delete = asyncio.create_task(accounts.delete_account(a, "t8", "d1", force=True))
        await asyncio.sleep(0.5)  # the delete takes the tenant row, then waits for the account
        await conn.execute("INSERT INTO send_log (tenant_id, account_id, message_pk, sent_at, "
                           "state) VALUES ('t8', 'd1', $1, 1, 'reserved')", pk)
        await reservation.commit()
        assert await asyncio.wait_for(delete, 10) == 1
    finally:
        await conn.close()
