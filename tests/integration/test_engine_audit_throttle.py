"""Audit (issue 7): adaptive throttling end to end (delivery.md §4 first row, §7; T7, T9)."""

from __future__ import annotations

import pytest

from tests.integration.test_engine_audit_helpers import (
    account_row,
    deliver,
    make,
    message,
    now,
    settle,
    sql,
)
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(("where", "reply"), [
    ("greeting", "421 4.3.2 Service not available"),
    ("mail", "421 4.7.0 Try again later"),
    ("data", "451 4.3.0 Local error"),
    ("mail", "450 4.7.1 Rate limit exceeded"),
    ("data", "452 4.5.3 Too many messages, slow down"),
    ("rcpt", "450 4.7.1 Throttled, too many connections"),
])
async def test_throttle_reply_pauses_the_account_without_attempts(
        core, smtp_server, where: str, reply: str) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    if where == "rcpt":
        smtp_server.script(rcpt={f"rcpt{i}@example.com": reply for i in range(1, 4)})
    else:
        smtp_server.script(**{where: reply})
    await f.enqueue(core, *[f.message(i) for i in range(1, 4)])
    d = make(core)
    try:
        before = now()
        await settle(d)
        first = await message(core, "m-1")
        assert first["status"] == "deferred" and first["attempts"] == 0
        assert first["last_error_code"] == "throttled"
        assert first["last_error"] == reply and first["last_smtp_code"] == int(reply[:3])
        event = first["events"][-1]
        assert event["event_type"] == "deferred" and event["description"] == reply
        assert event["metadata"] == {"code": "throttled", "smtp_code": int(reply[:3]),
                                     "next_attempt_at": first["next_attempt_at"]}
        row = await account_row(core)
        assert row["throttle_level"] == 1
        assert before + 60 <= row["throttle_until"] <= now() + 60
        if where == "rcpt":  # refused over its recipients: one pause more than its account
            pause = row["throttle_until"] - first["events"][-1]["event_ts"]
            assert abs(first["next_attempt_at"] - (row["throttle_until"] + pause)) <= 1
        else:
            assert first["next_attempt_at"] == row["throttle_until"]
        # the other messages of the account were given back (T7) or never claimed; after a
        # throttle at the end of DATA, the next message may already have been pipelined:
        # it gets the server's reply, deferred to the same pause (no attempt, no escalation)
        for other in ("m-2", "m-3"):
            msg = await message(core, other)
            assert msg["attempts"] == 0
            if where == "data" and msg["status"] == "deferred":
                assert msg["next_attempt_at"] == first["next_attempt_at"]
                assert msg["last_error_code"] == "throttled"
                assert [e["event_type"] for e in msg["events"]] == ["deferred"]
            else:
                assert msg["status"] == "queued" and msg["events"] == []
        # ... and stay unclaimed while throttle_until lies ahead
        for _ in range(3):
            assert await d.run_once() == 0
        # once the pause is over they are sent
        smtp_server.reset_script()
        await sql(core, f"UPDATE accounts SET throttle_until = {now() - 1}")
        await sql(core, f"UPDATE messages SET next_attempt_at = {now() - 1} "
                        "WHERE id = 'm-2' OR id = 'm-3'")
        d.configs.forget()
        await settle(d)
    finally:
        await d.smtp.close()
    for other in ("m-2", "m-3"):
        assert (await message(core, other))["status"] == "sent"


async def test_each_throttle_reply_doubles_the_pause_up_to_the_cap(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    smtp_server.script(mail="421 4.7.0 Try again later")
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        pauses = []
        for _ in range(2):
            await settle(d)
            row = await account_row(core)
            pauses.append((row["throttle_level"], row["throttle_until"] - now()))
            await sql(core, f"UPDATE accounts SET throttle_until = {now() - 1}")
            await sql(core, f"UPDATE messages SET next_attempt_at = {now() - 1}")
            d.configs.forget()
            d.wake()  # the dispatcher caches the next due time
        await sql(core, "UPDATE accounts SET throttle_level = 6")
        d.configs.forget()
        await settle(d)
        row = await account_row(core)
    finally:
        await d.smtp.close()
    assert [level for level, _ in pauses] == [1, 2]
    assert 58 <= pauses[0][1] <= 60 and 118 <= pauses[1][1] <= 120
    assert row["throttle_level"] == 6
    assert 1798 <= row["throttle_until"] - now() <= 1800  # min(60 * 2^5, 1800)
    assert (await message(core, "m-1"))["attempts"] == 0


async def test_one_connection_while_throttled_then_level_steps_down(core, smtp_server) -> None:
    core.settings.throttle_recovery_successes = 3
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=3)
    await sql(core, "UPDATE accounts SET throttle_level = 2, throttle_until = NULL")
    smtp_server.script(data_delay=0.05)
    await f.enqueue(core, *[f.message(i) for i in range(7)])
    await deliver(core)
    assert len(smtp_server.messages) == 7
    assert smtp_server.peak_connections == 1
    # 7 consecutive successes at 3 per step: 2 -> 1 -> 0 (the 7th changes nothing)
    assert (await account_row(core))["throttle_level"] == 0


async def test_unthrottled_account_uses_its_connections(core, smtp_server) -> None:
    """Control for the test above: without throttling the pool does open 3 connections."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=3)
    smtp_server.script(data_delay=0.1)
    await f.enqueue(core, *[f.message(i) for i in range(6)])
    await deliver(core)
    assert smtp_server.peak_connections == 3


async def test_a_failure_resets_the_recovery_count(core, smtp_server) -> None:
    core.settings.throttle_recovery_successes = 3
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await sql(core, "UPDATE accounts SET throttle_level = 1, throttle_until = NULL")
    # order: m-0, m-1 ok, m-2 refused (550), m-3, m-4 ok -> never 3 successes in a row
    smtp_server.script(rcpt={"rcpt2@example.com": "550 5.1.1 User unknown"})
    await f.enqueue(core, *[f.message(i) for i in range(5)])
    await deliver(core)
    assert (await message(core, "m-2"))["last_error_code"] == "all_recipients_refused"
    assert (await account_row(core))["throttle_level"] == 1


async def test_throttle_past_max_message_age_expires(core, smtp_server) -> None:
    core.settings.max_message_age = 30  # the pause (60 s) ends after the deadline
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(mail="421 4.7.0 Try again later")
    await f.enqueue(core, f.message(1))
    await deliver(core)
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["last_error_code"] == "expired"
    assert msg["attempts"] == 0
    assert "421 4.7.0 Try again later" in msg["last_error"]
    assert msg["events"][-1]["metadata"]["code"] == "expired"


async def test_a_message_throttled_over_its_recipients_lets_the_others_go_first(
        core, smtp_server) -> None:
    """One recipient answering "450 ... rate limit" at RCPT throttled its account after
    every pause: the message, still the oldest, was claimed first each time, and the
    account's other messages waited until max_message_age (Postfix interop hunt)."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    smtp_server.script(rcpt={"rcpt1@example.com": "450 4.7.1 Rate limit exceeded, slow down"})
    await f.enqueue(core, *[f.message(i) for i in range(1, 5)])
    d = make(core)
    try:
        await settle(d)
        poison = await message(core, "m-1")
        row = await account_row(core)
        assert poison["status"] == "deferred" and poison["next_attempt_at"] > row["throttle_until"]
        # the account's pause ends; the throttled message's own wait does not yet
        await sql(core, f"UPDATE accounts SET throttle_until = {now() - 1}")
        d.configs.forget()
        await settle(d)
        for other in ("m-2", "m-3", "m-4"):
            assert (await message(core, other))["status"] == "sent", other
        assert (await message(core, "m-1"))["status"] == "deferred"
    finally:
        await d.smtp.close()


async def test_a_message_pipelined_behind_a_throttle_and_hang_up_is_given_back(core) -> None:
    """Delivery hunt: "421 closing, slow down" at the end of m-1's data and a hang-up; m-2,
    pipelined behind it, was sent again at once on a new connection, inside the pause."""
    from tests.integration.test_smtp_pool import OneMessagePerSession

    async with OneMessagePerSession(b"421 4.7.0 closing, slow down") as srv:
        await f.tenant(core)
        await f.account(core, srv.port, max_connections=1)
        await f.enqueue(core, *[f.message(i) for i in range(1, 4)])
        d = make(core)
        try:
            await settle(d)
        finally:
            await d.smtp.close()
        assert len(srv.received) == 1  # m-1 only: nothing went out inside the pause
    first = await message(core, "m-1")
    assert (first["status"], first["last_error_code"]) == ("deferred", "throttled")
    for other in ("m-2", "m-3"):
        msg = await message(core, other)
        assert msg["status"] in ("queued", "deferred") and msg["attempts"] == 0, msg
