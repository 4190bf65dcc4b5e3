"""Audit (issue 7): durable sliding-window rate limits (delivery.md §6; T8, T13)."""

from __future__ import annotations

from typing import Any

import pytest

from mail_proxy.delivery import ratelimit
from mail_proxy.delivery.ratelimit import Limits
from mail_proxy.manager.core import Core
from mail_proxy.manager.messages import counts
from tests.integration.test_engine_audit_helpers import (
    deliver,
    make,
    message,
    now,
    sends_blocked,
    settle,
    sql,
)
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)


async def seed_sends(core: Core, *ages: int, account_id: str = "main") -> None:
    """Rows of send_log, ``age`` seconds old: sends another worker made earlier."""
    t = now()
    for age in ages:
        await sql(core, "INSERT INTO send_log (tenant_id, account_id, message_pk, sent_at, "
                        f"state) VALUES ('acme', '{account_id}', NULL, {t - age}, 'sent')")


async def sent_events(core: Core, ids: list[str]) -> list[str]:
    return [i for i in ids if any(e["event_type"] == "deferred"
                                  for e in (await message(core, i))["events"])]


async def test_earliest_free_time_example_of_6_4(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    # limit 2 per minute, sends at 100 and 130, now 140 -> free at 161: the spec's 160, one
    # second later because stamps are whole seconds (docs/decisions/delivery.md)
    await seed_sends(core, 40, 10)
    t = now()
    limits = Limits(account=((60, 2),), tenant=())
    refused = await ratelimit.reserve(core.store, "acme", "main", 1, limits, t)
    assert not refused.granted and not refused.reject
    assert refused.free_at == t - 40 + 60 + 1
    left, free_at = await ratelimit.remaining(core.store, "acme", "main", limits, t)
    assert left == 0 and free_at == t + 21
    # several full windows: the latest release wins (hour: 3 rows, oldest 3000 s ago)
    await seed_sends(core, 3000)
    both = Limits(account=((60, 2), (3600, 3)), tenant=())
    refused = await ratelimit.reserve(core.store, "acme", "main", 1, both, t)
    assert refused.free_at == t - 3000 + 3600 + 1
    # c > L: the slot frees when the L-th most recent row leaves the window
    three = Limits(account=((3600, 2),), tenant=())
    assert (await ratelimit.reserve(core.store, "acme", "main", 1, three, t)).free_at == \
        t - 40 + 3600 + 1


async def test_an_entry_counts_for_its_whole_window_despite_whole_second_stamps(
        core, smtp_server) -> None:
    # An entry stamped s was taken during [s, s+1); at now = s + 60 (really up to s + 60.99)
    # less than 60 s may have passed, so it still counts; at s + 61 it no longer does.
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    t = now()
    await seed_sends(core, 60, 60)
    limits = Limits(account=((60, 2),), tenant=())
    refused = await ratelimit.reserve(core.store, "acme", "main", 1, limits, t)
    assert not refused.granted and refused.free_at == t + 1
    granted = await ratelimit.reserve(core.store, "acme", "main", 1, limits, t + 1)
    assert granted.granted


async def test_refused_reservation_defers_to_the_free_slot_without_attempt(
        core, smtp_server) -> None:
    core.settings.max_concurrent_sends = 1
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=2)
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 1  # the pre-check saw 2 free slots
            await seed_sends(core, 30, 5)  # another worker takes both meanwhile
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["status"] == "deferred" and msg["attempts"] == 0
    assert msg["last_error_code"] is None and msg["last_error"] is None
    oldest = msg["next_attempt_at"] - 60
    assert now() - 32 <= oldest <= now() - 29
    event = msg["events"][-1]
    assert event["event_type"] == "deferred" and event["description"] == "rate_limit"
    assert event["metadata"] == {"code": "rate_limit",
                                 "next_attempt_at": msg["next_attempt_at"]}
    assert smtp_server.messages == []


async def test_reject_behaviour_fails_with_rate_limit_exceeded(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=1, limit_behavior="reject")
    await seed_sends(core, 10)
    await f.enqueue(core, f.message(1))
    await deliver(core)
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["attempts"] == 0
    assert msg["last_error_code"] == "rate_limit_exceeded"
    assert msg["last_error"] == "rate limit exceeded for account 'main'"
    assert msg["events"][-1]["metadata"] == {"code": "rate_limit_exceeded"}


async def test_tenant_limit_never_rejects_even_for_a_reject_account(core, smtp_server) -> None:
    await f.tenant(core, rate_limits={"per_minute": 1})
    await f.account(core, smtp_server.port, limit_per_minute=100, limit_behavior="reject")
    await seed_sends(core, 10)
    await f.enqueue(core, f.message(1))
    await deliver(core)
    msg = await message(core, "m-1")
    assert msg["status"] in ("queued", "deferred") and msg["attempts"] == 0
    assert all(e["metadata"]["code"] != "rate_limit_exceeded" for e in msg["events"])


async def test_reject_account_waits_queued_on_a_full_tenant_window(core, smtp_server) -> None:
    await f.tenant(core, rate_limits={"per_minute": 1})
    await f.account(core, smtp_server.port, limit_per_minute=100, limit_behavior="reject")
    await seed_sends(core, 10)
    await f.enqueue(core, f.message(1))
    await deliver(core)
    msg = await message(core, "m-1")
    assert msg["status"] == "queued" and msg["events"] == []


async def test_per_tenant_limit_spans_two_accounts(core, smtp_server) -> None:
    await f.tenant(core, rate_limits={"per_minute": 3})
    await f.account(core, smtp_server.port, account_id="a1", max_connections=1)
    await f.account(core, smtp_server.port, account_id="a2", max_connections=1)
    await f.enqueue(core, *[f.message(f"a1-{i}", account_id="a1") for i in range(3)],
                    *[f.message(f"a2-{i}", account_id="a2") for i in range(3)])
    await deliver(core)
    assert len(smtp_server.messages) == 3
    state = await counts(core, "acme")
    # one worker shares the tenant's room among its accounts: nothing is claimed beyond it,
    # so nothing is deferred with an event (delivery.md §6.3; QA hunt of 2026-11-25)
    assert state["sent"] == 3 and state["queued"] == 3 and state["deferred"] == 0
    ids = [f"m-a{a}-{i}" for a in (1, 2) for i in range(3)]
    assert await sent_events(core, ids) == []
    rows = await core.store.fetch("send_log_nth_tenant", tenant_id="acme", since=now() - 60,
                                  offset=0)
    assert rows  # the log holds the tenant's sends


async def test_single_worker_waits_at_the_limit_without_deferral_events(
        core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=3, max_connections=1)
    smtp_server.script(data_delay=0.05)
    ids = [f"m-{i}" for i in range(8)]
    await f.enqueue(core, *[f.message(i) for i in range(8)])
    await deliver(core)
    state = await counts(core, "acme")
    assert state["sent"] == 3
    assert await sent_events(core, ids) == []
    assert state["queued"] == 5


async def test_restart_in_the_middle_of_a_rate_window(core, keyring, sqlite_url,
                                                      smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=2, max_connections=1)
    await f.enqueue(core, *[f.message(i) for i in range(4)])
    first = make(core, "w1:1:aaaa")
    await settle(first)
    await first.smtp.close()
    assert len(smtp_server.messages) == 2
    await core.close()  # the worker stops ...

    again = await Core.open(sqlite_url, keyring, name="test")  # ... and starts again
    try:
        second = make(again, "w2:2:bbbb")
        await settle(second)
        assert len(smtp_server.messages) == 2  # the window survived the restart
        state = await counts(again, "acme")
        assert state["sent"] == 2 and state["queued"] + state["deferred"] == 2
        # one minute later (shift the log instead of sleeping) the next two go out
        await sql(again, "UPDATE send_log SET sent_at = sent_at - 61")
        await sql(again, f"UPDATE messages SET next_attempt_at = {now() - 1} "
                         "WHERE status = 'deferred'")
        third = make(again, "w3:3:cccc")
        await settle(third)
        await second.smtp.close()
        await third.smtp.close()
        assert len(smtp_server.messages) == 4
        assert (await counts(again, "acme"))["sent"] == 4
    finally:
        await again.close()  # closing the fixture's core again is harmless


async def test_priority_zero_waits_queued_behind_a_full_window(core, smtp_server) -> None:
    """The immediate pass skipped the pre-check: each priority-0 message behind a full window
    was claimed and deferred with a reportable event, again every window (N^2/2 events)."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=1, max_connections=1)
    ids = [f"m-{i}" for i in range(3)]
    await f.enqueue(core, *[f.message(i, priority=0) for i in range(3)])
    await deliver(core)
    state = await counts(core, "acme")
    assert state["sent"] == 1 and state["queued"] == 2 and state["deferred"] == 0
    assert await sent_events(core, ids) == []


async def blocked_then_changed(core: Core, port: int, first: dict[str, Any],
                               then: dict[str, Any], received: list[Any]) -> None:
    """m-1 sent and m-2 held back by the account's limit ``first``; then the account is
    changed to ``then`` and the same dispatcher settles again."""
    await f.tenant(core)
    await f.account(core, port, **first)
    await f.enqueue(core, f.message(1), f.message(2))
    d = make(core)
    try:
        await settle(d)
        assert len(received) == 1
        assert (await message(core, "m-2"))["status"] == "queued"  # blocked by the limit
        await f.account(core, port, **then)
        d.configs.forget()  # what the 5 s cache does by itself
        await settle(d)
    finally:
        await d.smtp.close()


async def test_a_limit_raised_or_removed_unblocks_the_account_at_once(core,
                                                                     smtp_server) -> None:
    """The dispatcher's "windows full until ..." mark belongs to the limits that set it: a
    per-day limit removed must not keep the queue waiting for tomorrow."""
    await blocked_then_changed(core, smtp_server.port, {"limit_per_day": 1},
                               {"limit_per_day": None}, smtp_server.messages)
    assert (await message(core, "m-2"))["status"] == "sent"
    assert len(smtp_server.messages) == 2


async def test_switching_to_reject_fails_the_waiting_messages(core, smtp_server) -> None:
    await blocked_then_changed(core, smtp_server.port, {"limit_per_hour": 1},
                               {"limit_per_hour": 1, "limit_behavior": "reject"},
                               smtp_server.messages)
    msg = await message(core, "m-2")
    assert msg["status"] == "error" and msg["last_error_code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(("script", "slot_used"), [
    ({"mail": "452 4.3.1 try again later"}, False),
    ({"rcpt": {"rcpt1@example.com": "450 4.2.1 mailbox busy"}}, False),
    ({"data": "452 4.3.1 content scan failed"}, True),
    ({"hang": "data"}, True),  # the final reply never comes: the message may have arrived
], ids=["mail-refused", "rcpt-refused", "data-refused", "final-reply-timeout"])
async def test_a_failed_transaction_keeps_its_rate_slot_once_a_recipient_was_accepted(
        core, smtp_server, script, slot_used) -> None:
    """delivery.md §3 step 8: a slot is given back only when no recipient was accepted.
    Giving it back after a lost final reply let a slow server receive 18 whole messages
    in 40 s at 3 per minute (delivery hunt)."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=3)
    smtp_server.script(**script)
    await f.enqueue(core, f.message(1))
    d = make(core, send_timeout=1)
    try:
        assert await d.run_once() == 1
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["attempts"] == 1 and msg["status"] in ("queued", "deferred")
    used = await core.store.fetch_value("send_log_count_account", tenant_id="acme",
                                        account_id="main", since=0)
    assert used == (1 if slot_used else 0)
