"""Delivery engine behaviour against a real SMTP server: limits, throttling, fairness,
leases, drain, suspension and retries (delivery.md §2-7, messages.md §6)."""

from __future__ import annotations

import asyncio
import email
import time

import pytest

from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager import tenants
from mail_proxy.manager.core import Core
from mail_proxy.manager.messages import counts, get_message
from tests.support import factories as f
from tests.support.dispatching import drive


def dispatcher_for(core: Core, owner: str) -> Dispatcher:
    return Dispatcher(core, owner=owner, smtp=SmtpPools(ehlo_name="test.local"))


def delivered_ids(server) -> list[str]:
    return [email.message_from_bytes(m.data)["X-Mail-Proxy-ID"] for m in server.messages]


async def test_rate_limit_holds_across_two_dispatchers_and_a_restart(
        core, keyring, sqlite_url, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=5)
    await f.enqueue(core, *[f.message(i) for i in range(12)])
    other = await Core.open(sqlite_url, keyring)
    try:
        first, second = dispatcher_for(core, "a:1:aa"), dispatcher_for(other, "b:2:bb")
        for _ in range(5):
            await first.run_once()
            await second.run_once()
            await asyncio.sleep(0.05)
        await drive(first)
        await drive(second)
        assert len(smtp_server.messages) == 5
        # a restart in the middle of the window: new processes see the durable send log
        again = await Core.open(sqlite_url, keyring)
        try:
            await drive(dispatcher_for(again, "c:3:cc"))
        finally:
            await again.close()
        assert len(smtp_server.messages) == 5
        state = await counts(core, "acme")
        assert state["sent"] == 5 and state["queued"] + state["deferred"] == 7
        for d in (first, second):
            await d.smtp.close()
    finally:
        await other.close()


async def test_reject_behaviour_fails_messages_over_the_limit(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=3, limit_behavior="reject",
                    max_connections=1)
    await f.enqueue(core, *[f.message(i) for i in range(5)])
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    state = await counts(core, "acme")
    assert state["sent"] == 3 and state["error"] == 2
    errors = [await get_message(core, "acme", f"m-{i}") for i in range(5)]
    assert {m["last_error_code"] for m in errors if m["status"] == "error"} == \
        {"rate_limit_exceeded"}
    await d.smtp.close()


async def test_throttle_reply_defers_without_consuming_an_attempt(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(mail="421 4.7.0 Too many messages, slow down")
    await f.enqueue(core, f.message(1))
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "deferred" and msg["attempts"] == 0
    assert msg["last_error_code"] == "throttled"
    account = await core.store.fetch_one("dispatch_account_config", tenant_id="acme",
                                         account_id="main")
    assert account is not None and account["throttle_level"] == 1
    assert account["throttle_until"] >= int(time.time()) + 50
    event = msg["events"][-1]
    assert event["event_type"] == "deferred" and event["metadata"]["code"] == "throttled"
    await d.smtp.close()


async def test_one_accounts_backlog_does_not_starve_another(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, account_id="bulk", max_connections=1)
    await f.account(core, smtp_server.port, account_id="small", max_connections=1)
    await f.enqueue(core, *[f.message(f"bulk-{i}", account_id="bulk") for i in range(150)])
    await f.enqueue(core, *[f.message(f"small-{i}", account_id="small") for i in range(2)])
    d = dispatcher_for(core, "a:1:aa")
    await drive(d, timeout=30)
    order = delivered_ids(smtp_server)
    assert len(order) == 152
    assert max(order.index("m-small-0"), order.index("m-small-1")) < 60
    await d.smtp.close()


async def test_lost_worker_lease_is_recovered_once(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    async with core.store.transaction() as tx:  # a worker claims, then dies
        claimed = await tx.fetch("claim_account", me="dead:1:00", now=int(time.time()) - 200,
                                 lease=120, tenant_id="acme", account_id="main", n=10,
                                 suspended=[])
    assert len(claimed) == 1
    d = dispatcher_for(core, "b:2:bb")
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 2
    assert [e["event_type"] for e in msg["events"]] == ["lease_expired", "sent"]
    assert len(smtp_server.messages) == 1
    await d.smtp.close()


async def test_drain_gives_back_unstarted_messages(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    smtp_server.script(data_delay=0.3)
    await f.enqueue(core, *[f.message(i) for i in range(10)])
    d = dispatcher_for(core, "a:1:aa")
    await d.run_once()
    await asyncio.sleep(0.1)
    await d.drain(timeout=5)
    state = await counts(core, "acme")
    assert state["sending"] == 0
    assert state["sent"] >= 1 and state["sent"] + state["queued"] == 10
    await d.smtp.close()


async def test_suspended_batch_is_not_claimed_until_activated(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1, batch_code="news"), f.message(2))
    await tenants.suspend(core, "acme", "news")
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    assert delivered_ids(smtp_server) == ["m-2"]
    await tenants.activate(core, "acme", "news")
    await drive(d)
    assert sorted(delivered_ids(smtp_server)) == ["m-1", "m-2"]
    await d.smtp.close()


@pytest.mark.parametrize("max_retries", [0])
async def test_exhausted_retries_end_in_error_with_reason(core, smtp_server, max_retries) -> None:
    core.settings.max_retries = max_retries
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="452 4.3.1 Insufficient system storage")
    await f.enqueue(core, f.message(1))
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "error"
    assert msg["last_error"].startswith(f"max retries ({max_retries}) exceeded: ")
    assert msg["events"][-1]["metadata"].get("retries_exhausted") is True
    await d.smtp.close()


async def test_partial_refusal_is_sent_with_refused_recipients(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(rcpt={"bad@example.com": "550 5.1.1 User unknown"})
    await f.enqueue(core, f.message(1, to=["good@example.com", "bad@example.com"]))
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "sent"
    meta = msg["events"][-1]["metadata"]
    assert meta["accepted"] == 1
    assert meta["refused_recipients"][0]["address"] == "bad@example.com"
    assert meta["refused_recipients"][0]["smtp_code"] == 550
    assert smtp_server.messages[0].rcpt_tos == ["good@example.com"]
    await d.smtp.close()


async def test_suppressed_recipients_are_refused_at_enqueue_and_send(core, smtp_server) -> None:
    from mail_proxy.errors import BadRequest
    from mail_proxy.manager import suppressions
    from mail_proxy.manager.core import ADMIN

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await suppressions.add_suppression(core, {"address": "Gone@Example.com"}, ADMIN, "acme")
    with pytest.raises(BadRequest) as refused:
        await f.enqueue(core, f.message(1, to=["gone@example.com"]))
    assert refused.value.rejected[0]["code"] == "suppressed"  # type: ignore[attr-defined]
    await f.enqueue(core, f.message(2, to=["gone@example.com", "ok@example.com"]))
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    assert smtp_server.messages[0].rcpt_tos == ["ok@example.com"]
    meta = (await get_message(core, "acme", "m-2"))["events"][-1]["metadata"]
    assert meta["refused_recipients"] == [
        {"address": "gone@example.com", "smtp_code": None, "message": "suppressed"}]
    await d.smtp.close()


async def test_one_domain_in_any_spelling_is_one_address(core, smtp_server) -> None:
    """Suppressions and the envelope sender agree on internationalised domains (Postfix
    interop hunt, 2026-11-25): an entry for "bücher.example" let mail through to
    "xn--bcher-kva.example" (what the envelope sends), and a return path in "straße.example"
    became "strasse.example" (IDNA 2003) while the recipients used "xn--strae-oqa"."""
    from mail_proxy.errors import BadRequest
    from mail_proxy.manager import suppressions
    from mail_proxy.manager.core import ADMIN

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await suppressions.add_suppression(core, {"address": "Gone@BÜCHER.example"}, ADMIN, "acme")
    with pytest.raises(BadRequest) as refused:
        await f.enqueue(core, f.message(1, to=["gone@xn--bcher-kva.example"]))
    assert refused.value.rejected[0]["code"] == "suppressed"  # type: ignore[attr-defined]
    await f.enqueue(core, f.message(2, to=["gone@bücher.example", "ok@straße.example"],
                                    return_path="bounce@straße.example"))
    d = dispatcher_for(core, "a:1:aa")
    await drive(d)
    sent = smtp_server.messages[0]
    assert sent.rcpt_tos == ["ok@xn--strae-oqa.example"]
    assert sent.mail_from == "bounce@xn--strae-oqa.example"
    listed = await suppressions.list_suppressions(core, "acme",
                                                  address_filter="GONE@xn--bcher-kva.example")
    assert [e["address"] for e in listed["suppressions"]] == ["gone@bücher.example"]
    assert await suppressions.remove_suppression(core, "acme", "gone@xn--bcher-kva.example")
    assert (await suppressions.list_suppressions(core, "acme"))["suppressions"] == []
    await d.smtp.close()
