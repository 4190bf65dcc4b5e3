"""A worker never recovers, or queues twice, a message it still holds (durability hunt of
2026-11-25: after a full disk outlasting the lease, a live worker took back its own
messages, sent them again and dropped the outcome it was waiting to write; a message
claimed again while held made the lane's heap compare two messages and the dispatcher
fail every cycle)."""

from __future__ import annotations

import pytest

from mail_proxy.delivery import leases
from tests.integration.test_engine_audit_helpers import OWNER, message, now, one_claimed
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)


async def _expire_leases(core) -> None:
    async with core.store.transaction() as tx:
        await tx.raw(f"UPDATE messages SET lease_expires_at = {now() - 1} "
                     "WHERE status = 'sending'")


async def test_a_held_message_whose_lease_lapsed_is_not_recovered_by_its_worker(
        core, smtp_server) -> None:
    async with one_claimed(core, smtp_server.port) as d:
        await _expire_leases(core)  # renewals failed for longer than a lease
        d._last_recovery = 0.0
        await d.run_once()  # its recovery pass runs here
        held = await message(core, "m-1")
        assert held["status"] == "sending" and held["attempts"] == 0
    msg = await message(core, "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1
    assert "lease_expired" not in [e["event_type"] for e in msg["events"]]
    assert len(smtp_server.messages) == 1


async def test_a_row_of_this_worker_it_no_longer_holds_is_recovered(core,
                                                                    smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    async with core.store.transaction() as tx:
        await tx.raw(f"UPDATE messages SET status = 'sending', lease_owner = '{OWNER}', "
                     f"lease_expires_at = {now() - 1}")
    recovered = await leases.recover_expired(core.store, max_retries=3, owner=OWNER,
                                             holding=set)
    assert recovered == [("acme", "main", False)]
    assert (await message(core, "m-1"))["status"] == "queued"


async def test_a_message_claimed_again_while_held_is_sent_once(core, smtp_server) -> None:
    """Another worker recovered it while this one was frozen; this one claims it again."""
    async with one_claimed(core, smtp_server.port) as d:
        async with core.store.transaction() as tx:  # T14 by another worker
            await tx.raw("UPDATE messages SET status = 'queued', lease_owner = NULL, "
                         "lease_expires_at = NULL")
        assert await d.run_once() == 1  # claimed again, already held
        assert d.held == 1
    assert (await message(core, "m-1"))["status"] == "sent"
    assert len(smtp_server.messages) == 1
