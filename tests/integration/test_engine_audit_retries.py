"""Audit (issue 7): retry schedule, max age, and what stays identical across attempts
(delivery.md §5, messages.md §4.2-4.3, §6 T10/T12/T16)."""

from __future__ import annotations

import email
import random
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from mail_proxy.delivery.retry import RetryPolicy
from mail_proxy.errors import TransientFailure
from mail_proxy.manager.messages import retry_messages
from tests.integration.test_engine_audit_helpers import (
    deliver,
    make,
    message,
    now,
    settle,
    spy_data,
)
from tests.support import factories as f

pytestmark = pytest.mark.timeout(30)


async def run_now(core, *ids: str) -> None:
    """T16: make deferred messages due now (what an operator's retry-messages does)."""
    answer = await retry_messages(core, "acme", list(ids))
    assert answer["retried"] == len(ids), answer


async def time_comes(core, message_id: str) -> None:
    """A deferred message falls due as if its time had come (its deferred_ts is kept, where
    an operator's early release moves it to now)."""
    async with core.store.transaction() as tx:
        await tx.raw(f"UPDATE messages SET status = 'queued', next_attempt_at = {now()} "
                     f"WHERE id = '{message_id}' AND status = 'deferred'")


def test_default_schedule_and_jitter_bounds() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for n, base in enumerate([60, 300, 900, 3600, 7200, 7200, 7200], start=1):
        values = {policy.delay(n, rng) for _ in range(400)}
        assert min(values) >= round(base * 0.9) and max(values) <= round(base * 1.1)
        assert len(values) > 5  # jitter really spreads the retries
    exact = RetryPolicy(retry_jitter=0.0, max_retries=7)
    assert [exact.delay(n) for n in range(1, 8)] == [60, 300, 900, 3600, 7200, 7200, 7200]
    assert RetryPolicy(retry_delays=(1,), retry_jitter=0.5).delay(1, rng) >= 1
    # the documented timeline: 0, +1 min, +6 min, +21 min, +1 h 21 min, +3 h 21 min
    elapsed, times = 0, [0]
    for n in range(1, 6):
        elapsed += exact.delay(n)
        times.append(elapsed)
    assert times == [0, 60, 360, 1260, 4860, 12060]
    failure = TransientFailure("450 4.7.0 busy", code="smtp_transient", smtp_code=450)
    last = exact.decide(attempts=8, created_at=0, deferred_ts=None, now=10, failure=failure)
    assert not last.retry and last.retries_exhausted


async def test_retry_schedule_end_to_end_until_retries_are_exhausted(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="450 4.7.0 Greylisted")
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        for n, base in enumerate([60, 300, 900, 3600, 7200], start=1):
            before = now()
            await settle(d)
            msg = await message(core, "m-1")
            assert msg["status"] == "deferred" and msg["attempts"] == n
            delay = msg["next_attempt_at"] - before
            assert round(base * 0.9) - 1 <= delay <= round(base * 1.1) + 1, (n, delay)
            event = msg["events"][-1]
            assert event["metadata"] == {"code": "smtp_transient", "attempt": n,
                                         "smtp_code": 450,
                                         "next_attempt_at": msg["next_attempt_at"]}
            await run_now(core, "m-1")
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["attempts"] == 6
    assert msg["last_error_code"] == "smtp_transient"
    assert msg["last_error"] == "max retries (5) exceeded: 450 4.7.0 Greylisted"
    meta = msg["events"][-1]["metadata"]
    assert meta["retries_exhausted"] is True and meta["attempt"] == 6
    assert smtp_server.commands["DATA"] == 6


async def test_transient_failure_past_max_message_age_expires(core, smtp_server) -> None:
    core.settings.max_message_age = 100
    core.settings.retry_jitter = 0.0
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="450 4.7.0 Greylisted")
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        await settle(d)  # +60 is within 100 s
        assert (await message(core, "m-1"))["status"] == "deferred"
        await run_now(core, "m-1")
        await settle(d)  # +300 is not
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["status"] == "error" and msg["attempts"] == 2
    assert msg["last_error_code"] == "expired"
    assert "450 4.7.0 Greylisted" in msg["last_error"]
    meta = msg["events"][-1]["metadata"]
    assert meta["code"] == "expired" and meta["attempt"] == 2 and meta["smtp_code"] == 450


async def test_max_message_age_counts_from_deferred_ts(core, smtp_server) -> None:
    core.settings.max_message_age = 100
    core.settings.retry_delays = [250]
    core.settings.retry_jitter = 0.0
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="450 4.7.0 Greylisted")
    await f.enqueue(core, f.message(1, deferred_ts=now() + 200))
    await time_comes(core, "m-1")
    await deliver(core)
    msg = await message(core, "m-1")
    # deadline = deferred_ts + 100 = now + 300 > now + 250: still retried
    assert msg["status"] == "deferred" and msg["last_error_code"] == "smtp_transient"


async def test_date_and_message_id_identical_across_retries(core, smtp_server) -> None:
    seen = spy_data(smtp_server)
    deferred_ts = now() + 1000
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="451 4.3.0 Temporary local problem")  # throttle: no attempt
    await f.enqueue(core, f.message(1, deferred_ts=deferred_ts))
    stored = await message(core, "m-1")
    d = make(core)
    try:
        await time_comes(core, "m-1")
        await settle(d)
        # 2nd try: an ordinary transient failure
        async with core.store.transaction() as tx:
            await tx.raw("UPDATE accounts SET throttle_until = NULL, throttle_level = 0")
        d.configs.forget()
        smtp_server.script(data="450 4.7.0 Greylisted")
        await time_comes(core, "m-1")
        await settle(d)
        smtp_server.reset_script()
        await time_comes(core, "m-1")
        await settle(d)
    finally:
        await d.smtp.close()
    assert (await message(core, "m-1"))["status"] == "sent"
    assert len(seen) == 3
    parsed = [email.message_from_bytes(raw) for raw in seen]
    dates = {p["Date"] for p in parsed}
    ids = {p["Message-ID"] for p in parsed}
    assert len(dates) == 1 and len(ids) == 1
    assert ids == {stored["message_id"]}
    expected = datetime.fromtimestamp(max(stored["created_at"], deferred_ts), UTC)
    assert parsedate_to_datetime(dates.pop()) == expected
    assert format_datetime(expected)  # sanity: a valid RFC 5322 date
    assert all(p["X-Mail-Proxy-ID"] == "m-1" for p in parsed)


async def test_an_early_release_is_dated_when_it_is_released(core, smtp_server) -> None:
    """retry-messages on a message scheduled a month ahead sends it now: its Date is the
    release, not the month-ahead schedule (delivery hunt: recipients saw a future date), and
    stays the same on the next attempt."""
    seen = spy_data(smtp_server)
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="450 4.7.0 Greylisted")
    await f.enqueue(core, f.message(1, deferred_ts=now() + 30 * 86400))
    released = now()
    d = make(core)
    try:
        await run_now(core, "m-1")
        await settle(d)
        smtp_server.reset_script()
        await run_now(core, "m-1")
        await settle(d)
    finally:
        await d.smtp.close()
    assert (await message(core, "m-1"))["status"] == "sent"
    dates = {email.message_from_bytes(raw)["Date"] for raw in seen}
    assert len(seen) == 2 and len(dates) == 1
    assert released <= parsedate_to_datetime(dates.pop()).timestamp() <= now()


async def test_bcc_only_in_the_envelope(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1, to=["Ann <ann@example.com>"], cc=["cc@example.com"],
                                    bcc=["Hidden <hidden@example.com>", "ANN@example.com"]))
    await deliver(core)
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ["ann@example.com", "cc@example.com", "hidden@example.com"]
    parsed = email.message_from_bytes(received.data)
    assert parsed["Bcc"] is None
    assert b"hidden" not in received.data.lower()
    assert parsed["Cc"] == "cc@example.com"


async def test_last_smtp_code_describes_the_last_attempt(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="452 4.3.1 Insufficient system storage")
    await f.enqueue(core, f.message(1))
    d = make(core, send_timeout=1)
    try:
        await settle(d)
        assert (await message(core, "m-1"))["last_smtp_code"] == 452
        smtp_server.script(data=None, hang="data")
        await run_now(core, "m-1")
        await settle(d)
    finally:
        await d.smtp.close()
    msg = await message(core, "m-1")
    assert msg["attempts"] == 2 and msg["last_error_code"] == "timeout"
    assert "smtp_code" not in msg["events"][-1]["metadata"]
    assert msg["last_smtp_code"] is None
