"""Manager-level contract: the same operations give the same results on SQLite and PostgreSQL.

Every case runs twice through the ``core`` fixture of tests/store/conftest.py.
"""

from __future__ import annotations

import asyncio
import email

import pytest

from mail_proxy.delivery import leases
from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager import accounts, tenants
from mail_proxy.manager.core import now
from mail_proxy.manager.messages import counts, get_message
from mail_proxy.store import UniqueViolation
from mail_proxy.store.errors import StoreUnavailable
from tests.support import factories as f
from tests.support.dispatching import drive


def make_dispatcher(core, owner: str = "test:1:abcd") -> Dispatcher:
    return Dispatcher(core, owner=owner, smtp=SmtpPools(ehlo_name="test.local"))


async def test_tenants_and_accounts_round_trip(core) -> None:
    await f.tenant(core, "acme", name="Acme", rate_limits={"per_minute": 5})
    await f.account(core, 2525, is_pec=False, tls_verify=False)
    got = await tenants.get_tenant(core, "acme")
    assert got["name"] == "Acme" and got["active"] is True
    assert got["rate_limits"]["per_minute"] == 5
    acc = await accounts.get_account(core, "acme", "main")
    assert acc["port"] == 2525 and acc["tls_verify"] is False
    assert [a["id"] for a in await accounts.list_accounts(core, "acme")] == ["main"]
    assert [a["id"] for a in await accounts.list_accounts(core)] == ["main"]
    assert [t["id"] for t in await tenants.list_tenants(core)] == ["acme"]


async def test_duplicate_insert_is_a_unique_violation(core) -> None:
    params = dict(id="dup", name=None, client_base_url=None, client_sync_path="/s",
                  client_attachment_path="/a", client_auth=None, signing_secret=None,
                  rate_limits=None, large_file_config=None, default_account_id=None,
                  active=1, api_key_hash=None, now=1)
    async with core.store.transaction() as tx:
        await tx.execute("tenant_insert", **params)
    with pytest.raises(UniqueViolation):
        async with core.store.transaction() as tx:
            await tx.execute("tenant_insert", **params)
    assert [r["id"] for r in await core.store.fetch("tenant_list", active_only=1)] == ["dup"]


async def test_grouped_isolates_a_failing_caller(core) -> None:
    await f.tenant(core)

    async def ok(tx) -> int:
        return await tx.execute("tenant_set_suspended", id="acme", suspended_batches=["b1"],
                                now=5)

    async def bad(tx) -> int:
        raise RuntimeError("boom")

    results = await asyncio.gather(core.store.grouped(ok), core.store.grouped(bad),
                                   return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], RuntimeError)
    row = await core.store.fetch_one("tenant_get", id="acme")
    assert row["suspended_batches"] == '["b1"]'


async def test_execute_then_many_runs_then_only_where_a_row_changed(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.enqueue(core, f.message(1))
    pk = (await core.store.fetch("message_statuses", tenant_id="acme", ids=["m-1"]))[0]["pk"]
    event = {"message_pk": pk, "tenant_id": "acme", "event_type": "sent", "now": 7,
             "description": None, "metadata": "{}", "reportable": False}
    steps = [
        ("tenant_set_suspended", {"id": "acme", "suspended_batches": ["b"], "now": 5},
         "event_insert", event),
        ("tenant_set_suspended", {"id": "nobody", "suspended_batches": [], "now": 5},
         "event_insert", {**event, "event_type": "error"}),
        ("tenant_set_suspended", {"id": "acme", "suspended_batches": [], "now": 6}, None, None),
    ]
    async with core.store.transaction() as tx:
        assert await tx.execute_then_many(steps) == [1, 0, 1]
    events = await core.store.fetch("message_events", pk=pk)
    assert [e["event_type"] for e in events if e["event_ts"] == 7] == ["sent"]


async def test_apply_steps_records_a_batch_of_outcomes_in_one_transaction(core) -> None:
    """A batch of outcome steps in one transaction (on SQLite, one hand-off to its thread)
    must count and record exactly like the steps one by one: only the messages whose lease
    is ours change, and only those get their event; the claims before it take exactly their
    LIMIT on both backends."""
    await f.tenant(core)
    await f.account(core, 2525)
    await f.enqueue(core, *[f.message(i) for i in range(7)])
    found = await core.store.apply_fetches([
        ("claim_immediate", {"me": "w1", "now": now(), "lease": 60, "n": 100,
                             "limited": []}),
        ("claim_account", {"me": "w1", "now": now(), "lease": 60, "tenant_id": "acme",
                           "account_id": "main", "n": 5, "suspended": []})])
    claimed = sorted(r["pk"] for rows in found for r in rows)
    assert len(claimed) == 5
    free = [r["pk"] for r in await core.store.fetch("message_statuses", tenant_id="acme",
                                                    ids=[f"m-{i}" for i in range(7)])
            if r["pk"] not in claimed]

    def step(pk: int, me: str = "w1") -> tuple:
        return ("mark_sent", {"pk": pk, "me": me, "now": 9, "smtp_code": 250,
                              "tenant_id": "acme", "pec_deadline_at": None},
                "outcome_event_insert", {"message_pk": pk, "tenant_id": "acme",
                                         "event_type": "sent", "now": 9, "description": None,
                                         "metadata": "{}"})

    steps = [step(pk) for pk in claimed[:3]] + [step(free[0])] + [step(claimed[3], "w2")] \
        + [step(claimed[4])] + [("mark_released", {"pk": claimed[4], "me": "w1", "now": 9},
                                 None, None)]
    # Given in reverse (PostgreSQL runs them in pk order, as lease renewals lock rows, so
    # that the two never deadlock): each count still answers its own step, and two steps of
    # one message keep their order.
    rev = [*steps[::-1][1:], steps[-1]]  # reversed, but mark_sent of claimed[4] first
    assert await core.store.apply_steps(rev) == [1, 0, 0, 1, 1, 1, 0]
    rows = {r["pk"]: r for r in await core.store.fetch(
        "message_statuses", tenant_id="acme", ids=[f"m-{i}" for i in range(7)])}
    assert sorted(pk for pk, r in rows.items() if r["status"] == "sent") == \
        sorted([*claimed[:3], claimed[4]])
    assert rows[claimed[3]]["status"] == "sending" and rows[free[0]]["status"] == "queued"
    for pk in rows:
        events = [e["event_type"] for e in await core.store.fetch("message_events", pk=pk)
                  if e["event_ts"] == 9]
        assert events == (["sent"] if rows[pk]["status"] == "sent" else [])


async def test_enqueue_send_and_record_outcomes(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(rcpt={"rcpt1@example.com": "550 5.1.1 User unknown"})
    answer = await f.enqueue(core, *[f.message(i) for i in range(6)])
    assert answer["queued"] == 6
    again = await f.enqueue(core, f.message(0))  # idempotent resubmission
    assert again["queued"] + again.get("rejected_count", 0) <= 1
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    c = await counts(core, "acme")
    assert (c["sent"], c["error"], c["queued"], c["sending"]) == (5, 1, 0, 0), c
    ids = sorted(email.message_from_bytes(m.data)["X-Mail-Proxy-ID"]
                 for m in smtp_server.messages)
    assert len(ids) == len(set(ids)) == 5
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "error" and "550" in msg["last_error"]
    msg = await get_message(core, "acme", "m-2")
    assert msg["status"] == "sent" and msg["attempts"] == 1
    await dispatcher.smtp.close()


async def test_per_minute_limit_is_exact(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=3)
    await f.enqueue(core, *[f.message(i) for i in range(8)])
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    c = await counts(core, "acme")
    assert c["sent"] == 3 and len(smtp_server.messages) == 3
    assert c["queued"] + c["deferred"] == 5
    await dispatcher.smtp.close()


async def test_two_dispatchers_never_claim_the_same_message(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525, batch_size=1000)
    await f.enqueue(core, *[f.message(i) for i in range(300)])
    await f.enqueue(core, *[f.message(f"p{i}", priority="immediate") for i in range(50)])
    a, b = make_dispatcher(core, "a:1:x"), make_dispatcher(core, "b:2:y")
    got_a, got_b = await asyncio.gather(a._claim(now()), b._claim(now()))
    pks_a, pks_b = {m.pk for m in got_a}, {m.pk for m in got_b}
    assert not pks_a & pks_b
    assert len(pks_a | pks_b) == 350
    c = await counts(core, "acme")
    assert c["sending"] == 350


async def test_expired_lease_is_recovered_once(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.enqueue(core, *[f.message(i) for i in range(5)])
    dispatcher = make_dispatcher(core, "dead:1:x")
    claimed = await dispatcher._claim(0)
    assert len(claimed) == 5
    await leases.renew(core.store, "dead:1:x", -10)  # the lease now lies in the past
    results = await asyncio.gather(*[leases.recover_expired(
        core.store, max_retries=5) for _ in range(3)])
    assert sum(map(len, results)) == 5
    assert {r for rs in results for r in rs} == {("acme", "main", False)}
    msg = await get_message(core, "acme", "m-0")
    assert msg["status"] == "queued" and msg["attempts"] == 1
    assert [e["event_type"] for e in msg["events"]] == ["lease_expired"]
    assert msg["last_error"] == "worker lost during delivery"


async def test_a_lease_lost_with_no_retry_left_ends_in_error_with_the_prefix(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.enqueue(core, f.message(1))
    dispatcher = make_dispatcher(core, "dead:1:x")
    assert len(await dispatcher._claim(0)) == 1
    await leases.renew(core.store, "dead:1:x", -10)
    assert await leases.recover_expired(core.store, max_retries=0) == [("acme", "main", True)]
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "error" and msg["last_error_code"] == "lease_expired"
    # the failure text has the prefix of its event (messages.md §7)
    assert msg["last_error"] == "max retries (0) exceeded: worker lost during delivery"
    assert msg["events"][-1]["description"] == msg["last_error"]


async def test_closed_store_is_unavailable(core) -> None:
    if core.store.backend == "sqlite":
        pytest.skip("the SQLite store asserts instead")
    await core.store.close()
    with pytest.raises(StoreUnavailable):
        await core.store.fetch("tenant_list", active_only=0)
