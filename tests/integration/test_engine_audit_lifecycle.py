"""Audit (issue 7): what changes between claim and send, and leases (delivery.md §2.1,
§3 step 2; messages.md §6 T6, T7, T12; §7 reportable events)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mail_proxy.manager import accounts, tenants
from mail_proxy.manager.core import ADMIN
from tests.integration.test_engine_audit_helpers import (
    deliver,
    expire_config_cache,
    make,
    message,
    now,
    one_claimed,
    sends_blocked,
    settle,
)
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)


async def read(sqlite_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """A read on a separate connection, off the event loop."""
    path = sqlite_url.removeprefix("sqlite://")

    def run() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(query, params).fetchall()

    return await asyncio.to_thread(run)


async def test_tenant_deactivated_after_claim_gives_the_message_back(
        core, smtp_server, monkeypatch) -> None:
    core.settings.max_concurrent_sends = 1
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 1
            await tenants.patch_tenant(core, "acme", {"active": False}, ADMIN)
            expire_config_cache(monkeypatch)  # the 5 s cache has run out
        await settle(d)
        msg = await message(core, "m-1")
        assert msg["status"] == "queued" and msg["attempts"] == 0 and msg["events"] == []
        row = await core.store.fetch_one("message_get", tenant_id="acme", id="m-1")
        assert row is not None and row["lease_owner"] is None
        assert row["lease_expires_at"] is None
        assert await d.run_once() == 0  # an inactive tenant is not claimed again
        await tenants.patch_tenant(core, "acme", {"active": True}, ADMIN)
        await settle(d)
    finally:
        await d.smtp.close()
    assert (await message(core, "m-1"))["status"] == "sent"
    assert len(smtp_server.messages) == 1


async def test_batch_suspended_after_claim_gives_the_message_back(
        core, smtp_server, monkeypatch) -> None:
    core.settings.max_concurrent_sends = 1
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1, batch_code="news"))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 1
            await tenants.suspend(core, "acme", "news")
            expire_config_cache(monkeypatch)
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["status"] == "queued" and msg["attempts"] == 0 and msg["events"] == []
    assert smtp_server.messages == []


async def account_deleted_after_claim(core, smtp_server, monkeypatch) -> dict[str, Any]:
    core.settings.max_concurrent_sends = 1
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 1
            await accounts.delete_account(core, "acme", "main", force=True)
            expire_config_cache(monkeypatch)
        await settle(d)
    finally:
        await d.smtp.close()
    assert smtp_server.messages == []
    return await message(core, "m-1")


async def test_account_deleted_after_claim_is_account_not_found(
        core, smtp_server, monkeypatch) -> None:
    await f.tenant(core)
    msg = await account_deleted_after_claim(core, smtp_server, monkeypatch)
    assert msg["status"] == "error" and msg["attempts"] == 0
    assert msg["last_error_code"] == "account_not_found"
    assert msg["last_error"] == "account 'main' does not exist for tenant 'acme'"
    event = msg["events"][-1]
    assert event["event_type"] == "error" and event["description"] == msg["last_error"]
    assert event["metadata"] == {"code": "account_not_found"}


async def test_account_not_found_is_reported_to_a_tenant_with_a_sync_url(
        core, smtp_server, monkeypatch, sqlite_url) -> None:
    await f.tenant(core, client_base_url="http://127.0.0.1:9")  # never called here
    msg = await account_deleted_after_claim(core, smtp_server, monkeypatch)
    assert msg["last_error_code"] == "account_not_found"
    rows = await read(sqlite_url, "SELECT e.reportable, m.settled_at FROM message_events e "
                                  "JOIN messages m ON m.pk = e.message_pk "
                                  "WHERE e.event_type = 'error'")
    assert rows == [(1, None)]


async def test_error_events_are_reportable_for_a_tenant_with_a_sync_url(
        core, smtp_server, sqlite_url) -> None:
    """Control for the test above: an ordinary permanent failure is reportable."""
    await f.tenant(core, client_base_url="http://127.0.0.1:9")
    await f.account(core, smtp_server.port)
    smtp_server.script(data="554 5.7.1 Spam detected")
    await f.enqueue(core, f.message(1))
    await deliver(core)
    rows = await read(sqlite_url, "SELECT e.reportable, m.settled_at FROM message_events e "
                                  "JOIN messages m ON m.pk = e.message_pk "
                                  "WHERE e.event_type = 'error'")
    assert rows == [(1, None)]


@contextlib.asynccontextmanager
async def running(d: Any) -> AsyncIterator[None]:
    """The dispatcher's own loop (claims, recovery, lease renewal) for the block; then
    drained, stopped and its connections closed."""
    runner = asyncio.create_task(d.run())
    try:
        yield
    finally:
        await d.drain(timeout=2)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await d.smtp.close()


async def leases_until_sent(sqlite_url: str, seconds: float) -> list[int]:
    """lease_expires_at of the one message while it is `sending`, polled until it is sent."""
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        [(status, lease)] = await read(sqlite_url,
                                       "SELECT status, lease_expires_at FROM messages")
        if status == "sent":
            break
        if status == "sending":
            seen.append(lease)
        await asyncio.sleep(0.2)
    return seen


async def test_lease_is_renewed_while_a_send_is_slow(core, smtp_server, sqlite_url) -> None:
    core.settings.lease_seconds = 2  # renewed every 0.5 s (lease / 4)
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data_delay=2.6)
    await f.enqueue(core, f.message(1))
    d = make(core, connect_timeout=5, send_timeout=5)
    async with running(d):
        seen = await leases_until_sent(sqlite_url, 6)
    msg = await message(core, "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1, msg["last_error"]
    assert [e["event_type"] for e in msg["events"]] == ["sent"]  # never recovered
    assert len(seen) >= 5
    assert max(seen) >= min(seen) + 2  # lease_expires_at moved forward during the send


async def test_a_lowered_lease_is_renewed_on_its_own_cadence(core, smtp_server,
                                                             sqlite_url) -> None:
    """lease_seconds lowered while the renewer sleeps a quarter of the old value: the next
    renewal follows the new value, so the shorter leases never lapse under a live send."""
    core.settings.lease_seconds = 400  # the renewer's first wait: 100 s
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data_delay=3.5)
    d = make(core, connect_timeout=5, send_timeout=8)
    async with running(d):
        await asyncio.sleep(0.2)
        core.settings.lease_seconds = 2  # from now on renewed every 0.5 s
        await f.enqueue(core, f.message(1))
        d.wake()
        seen = await leases_until_sent(sqlite_url, 8)
    msg = await message(core, "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1, msg["last_error"]
    assert [e["event_type"] for e in msg["events"]] == ["sent"]  # never recovered
    assert max(seen) >= min(seen) + 2  # renewed during the send
    assert len(smtp_server.messages) == 1


async def test_a_raised_lease_still_renews_the_shorter_leases_granted(core, smtp_server,
                                                                      sqlite_url) -> None:
    """lease_seconds raised while a send holds a short lease: the renewal is paced by the
    lease in force, not by a quarter of the new value, or the short lease lapses first."""
    core.settings.lease_seconds = 2
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data_delay=7)  # past the dispatcher's recovery pass, every 5 s
    await f.enqueue(core, f.message(1))
    d = make(core, connect_timeout=5, send_timeout=12)
    async with running(d):
        for _ in range(100):  # until the send (with its 2 s lease) is under way
            if smtp_server.commands["DATA"]:
                break
            await asyncio.sleep(0.05)
        core.settings.lease_seconds = 400  # a quarter of it: 100 s
        await leases_until_sent(sqlite_url, 15)
    msg = await message(core, "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1, msg["last_error"]
    assert [e["event_type"] for e in msg["events"]] == ["sent"]  # never recovered
    assert len(smtp_server.messages) == 1


async def test_leases_keep_being_renewed_while_a_drain_waits(core, smtp_server,
                                                             sqlite_url) -> None:
    """A graceful stop waits up to shutdown_timeout for sends in flight: their leases must
    not lapse meanwhile, or another worker takes the messages and sends them again."""
    core.settings.lease_seconds = 2  # renewed every 0.5 s
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data_delay=3.5)
    await f.enqueue(core, f.message(1))
    d = make(core, connect_timeout=5, send_timeout=8)
    runner = asyncio.create_task(d.run())
    try:
        for _ in range(100):  # until the send is under way
            if smtp_server.commands["DATA"]:
                break
            await asyncio.sleep(0.05)
        leases: list[int] = []

        async def watch() -> None:
            while True:
                rows = await read(sqlite_url, "SELECT status, lease_expires_at FROM messages")
                if rows[0][0] == "sending":
                    leases.append(rows[0][1])
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        await d.drain(timeout=8)
        watcher.cancel()
        msg = await message(core, "m-1")
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await d.smtp.close()
    assert msg["status"] == "sent" and [e["event_type"] for e in msg["events"]] == ["sent"]
    assert max(leases) >= min(leases) + 2  # renewed while the drain waited for the send
    assert d._renewer is not None and d._renewer.done()  # and stopped once it ended


async def test_lease_lost_error_is_reported_to_a_tenant_with_a_sync_url(
        core, smtp_server, sqlite_url) -> None:
    core.settings.max_retries = 0  # the recovered attempt is the last one: T14b
    await f.tenant(core, client_base_url="http://127.0.0.1:9")
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    async with core.store.transaction() as tx:  # a worker claims, then dies
        claimed = await tx.fetch("claim_account", me="dead:1:00", now=now() - 200, lease=120,
                                 tenant_id="acme", account_id="main", n=10, suspended=[])
    assert len(claimed) == 1
    d = make(core)  # a worker that just started
    try:
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["last_error_code"] == "lease_expired"
    rows = await read(sqlite_url, "SELECT e.reportable, m.settled_at FROM message_events e "
                                  "JOIN messages m ON m.pk = e.message_pk "
                                  "WHERE e.event_type = 'error'")
    assert rows == [(1, None)]


async def test_a_new_max_concurrent_sends_reaches_the_loops_already_waiting(
        core, smtp_server) -> None:
    """Swapping the slot semaphore on a settings change stranded the loops waiting on the old
    one (their messages stayed `sending` until the worker stopped) and let sends release
    into the new one past its bound (QA hunt of 2026-11-25)."""
    core.settings.max_concurrent_sends = 1
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    for n in (1, 2, 3):
        await f.enqueue(core, f.message(n))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 3
            await asyncio.sleep(0.05)
            assert smtp_server.messages == []  # all three loops wait for a slot
            core.settings.max_concurrent_sends = 3
            await d.run_once()  # a cycle applies the new bound
            for _ in range(300):  # the held slot stays held: two run at once, then the third
                assert d._slots.used <= 3
                if len(smtp_server.messages) == 3:
                    break
                await asyncio.sleep(0.01)
            assert len(smtp_server.messages) == 3
        await settle(d)
    finally:
        await d.smtp.close()
    assert len(smtp_server.messages) == 3
    assert d._slots.used == 0
    assert [(await message(core, f"m-{n}"))["status"] for n in (1, 2, 3)] == ["sent"] * 3


async def test_a_worker_paused_past_its_lease_does_not_send_what_another_took(
        core, smtp_server, monkeypatch) -> None:
    """A worker frozen longer than its lease (SIGSTOP, a paused VM) must not send, on waking,
    the messages another worker recovered and sent meanwhile (QA hunt of 2026-11-25: 20 of
    600 messages arrived twice with no crash at all)."""
    from mail_proxy.delivery import leases

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, *[f.message(n) for n in (1, 2, 3)])
    paused, other = make(core, "paused:1:x"), make(core, "other:2:y")
    try:
        async with sends_blocked(paused):
            assert await paused.run_once() == 3  # claimed; every send waits for a slot
            await leases.renew(core.store, "paused:1:x", -10)  # the pause outlasts the lease
            await settle(other)  # recovers them (T14) and sends them
            assert len(smtp_server.messages) == 3
            # the paused worker wakes up: its clock says the leases may have lapsed
            monkeypatch.setattr(leases.LeaseGuard, "MARGIN", 1000.0)
        await settle(paused)
    finally:
        await paused.smtp.close()
        await other.smtp.close()
    assert len(smtp_server.messages) == 3  # not six
    for n in (1, 2, 3):
        msg = await message(core, f"m-{n}")
        assert msg["status"] == "sent" and msg["attempts"] == 2  # one lost, one delivered


async def test_a_worker_that_kept_its_leases_sends_after_checking(core, smtp_server,
                                                                  monkeypatch) -> None:
    from mail_proxy.delivery import leases

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    d = make(core)
    monkeypatch.setattr(leases.LeaseGuard, "MARGIN", 1000.0)  # every send checks first
    try:
        await settle(d)
    finally:
        await d.smtp.close()
    assert len(smtp_server.messages) == 1
    assert (await message(core, "m-1"))["status"] == "sent"


@pytest.mark.parametrize("expired", [True, False], ids=["cache-expired", "cached"])
@pytest.mark.parametrize("limits", [{}, {"limit_per_minute": 5}], ids=["unlimited", "limited"])
async def test_tenant_deleted_after_claim_drops_the_send_quietly(
        core, smtp_server, monkeypatch, caplog, limits, expired) -> None:
    """A forced tenant delete takes its messages with it: a send already claimed has nothing
    left to send, record or report, and is not an internal error (the rate-limit reservation
    used to fail on the tenant's foreign key and log a traceback)."""
    async with one_claimed(core, smtp_server.port, **limits) as d:
        await tenants.delete_tenant(core, "acme", force=True)
        if expired:  # else the 5 s configuration cache still holds the tenant
            expire_config_cache(monkeypatch)
    assert await d.run_once() == 0
    # Unlimited and cached, nothing is read before the SMTP transaction: the message goes
    # out, as a sending message of a deleted account does (api.md §6.1).
    sent_anyway = not expired and not limits
    assert len(smtp_server.messages) == (1 if sent_anyway else 0)
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


async def test_account_deleted_after_claim_with_a_cached_limit_is_account_not_found(
        core, smtp_server, caplog) -> None:
    """The sender's configuration, cached, still has the account: the rate-slot reservation
    is what finds it gone, and the message ends T12 instead of an internal error."""
    async with one_claimed(core, smtp_server.port, limit_per_minute=5):
        await accounts.delete_account(core, "acme", "main", force=True)
    assert smtp_server.messages == []
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["last_error_code"] == "account_not_found"
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
