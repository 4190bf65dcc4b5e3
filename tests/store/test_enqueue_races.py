"""add-messages under real concurrency, on SQLite and PostgreSQL.

- A tenant or account deleted (force) while requests for it are being stored: the existence
  checks of messages.md §2 (4 and 5) must hold when the messages are committed, so those
  messages are rejected ``tenant_not_found`` / ``account_not_found``, never a 500 from the
  foreign key and never stored for an account that no longer exists (api.md §6.2, §7.2).
- ``max_queued_messages`` with many requests at once (api.md §1.4, §4.1 step 4): one worker
  never passes the cap, and does not refuse a request that fits.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from mail_proxy.manager import accounts, tenants
from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.manager.enqueue import AllRejected, add_messages
from mail_proxy.manager.queue_cap import QueueFull
from tests.support import factories as f


async def _send(core: Core, *ids: int | str, **fields: Any) -> dict[str, Any]:
    return await add_messages(core, {"tenant_id": "acme", "messages": [
        f.message(i, **fields) for i in ids]}, ADMIN)


async def _waiting_for(core: Core, account_id: str) -> dict[str, int]:
    rows = await core.store.fetch("account_message_counts", tenant_id="acme",
                                  account_id=account_id)
    return {r["status"]: int(r["n"]) for r in rows}


async def _two_accounts(core: Core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.account(core, 2526, account_id="other")
    # The tenant cache now holds both accounts for a second: the requests below are
    # validated against it, as in production right after a delete.
    await _send(core, "warm", account_id="main")


def _codes(outcomes: list[Any]) -> set[str]:
    """The rejection codes of the refused requests; anything but a refusal or an answer
    (a driver error, which the API would answer 500) fails the test."""
    codes: set[str] = set()
    for outcome in outcomes:
        if isinstance(outcome, AllRejected):
            codes |= {r["code"] for r in outcome.rejected}
        else:
            assert isinstance(outcome, dict), repr(outcome)
    return codes


async def test_requests_racing_a_forced_tenant_delete_are_refused_not_failed(core: Core
                                                                             ) -> None:
    await _two_accounts(core)
    deleted, *outcomes = await asyncio.gather(
        tenants.delete_tenant(core, "acme", force=True),
        *(_send(core, i, account_id="main") for i in range(10)), return_exceptions=True)
    assert isinstance(deleted, dict), repr(deleted)
    assert _codes(outcomes) <= {"tenant_not_found"}
    assert await core.store.fetch("enqueue_tenants", ids=["acme"]) == []
    assert await core.store.fetch_value("count_waiting") == 0


async def test_requests_racing_a_forced_account_delete_store_nothing_for_it(core: Core
                                                                            ) -> None:
    await _two_accounts(core)
    cancelled, *outcomes = await asyncio.gather(
        accounts.delete_account(core, "acme", "other", force=True),
        *(_send(core, i, account_id="other") for i in range(10)),
        return_exceptions=True)
    assert isinstance(cancelled, int), repr(cancelled)
    assert _codes(outcomes) <= {"account_not_found"}
    # accepted before the delete: cancelled with the others (T17); after: rejected
    assert await _waiting_for(core, "other") == {}


@pytest.mark.parametrize("target", ["tenant", "account"])
async def test_a_delete_in_progress_is_seen_by_the_requests_it_overlaps(core: Core,
                                                                        target: str) -> None:
    """The delete's transaction stays open while the requests are validated (against the
    cache, which still lists the account) and reach their own write: they must wait for it
    and then find the account gone. On PostgreSQL nothing else would hold them back:
    messages.account_id has no foreign key, and the tenant's only fails the insert."""
    await _two_accounts(core)
    async with core.store.transaction() as tx:
        if target == "tenant":
            await tx.fetch_one("tenant_lock", id="acme")
        else:
            await tx.fetch_one("account_lock", tenant_id="acme", id="other")
        for_other = [asyncio.create_task(_send(core, i, account_id="other")) for i in range(5)]
        for_main = [asyncio.create_task(_send(core, f"k{i}", account_id="main"))
                    for i in range(3)]  # grouped with the others, on SQLite
        mixed = asyncio.create_task(add_messages(core, {"tenant_id": "acme", "messages": [
            f.message("a", account_id="main"), f.message("b", account_id="other")]}, ADMIN))
        await asyncio.sleep(0.3)  # they are validated and wait for the database meanwhile
        if target == "tenant":
            await tx.execute("tenant_delete", id="acme")
        else:
            await tx.execute("account_delete", tenant_id="acme", id="other")
    outcomes = await asyncio.gather(*for_other, mixed, return_exceptions=True)
    kept = await asyncio.gather(*for_main, return_exceptions=True)
    gone = {"tenant": "tenant_not_found", "account": "account_not_found"}[target]
    for outcome in outcomes[:-1]:
        assert isinstance(outcome, AllRejected), repr(outcome)
        assert [r["code"] for r in outcome.rejected] == [gone]
    answer = outcomes[-1]
    if target == "tenant":
        assert isinstance(answer, AllRejected), repr(answer)
        assert [(r["index"], r["code"], r["field"]) for r in answer.rejected] == [
            (0, gone, "tenant_id"), (1, gone, "tenant_id")]
    else:
        # the message for the account that is still there is stored, the other refused
        assert isinstance(answer, dict), repr(answer)
        assert answer["queued"] == 1
        assert [(r["index"], r["id"], r["code"], r["field"]) for r in answer["rejected"]] == [
            (1, "m-b", gone, "account_id")]
        assert "'other'" in answer["rejected"][0]["reason"]
    assert await _waiting_for(core, "other") == {}
    if target == "account":
        assert all(isinstance(a, dict) and a["queued"] == 1 for a in kept), kept
        assert await _waiting_for(core, "main") == {"queued": 1 + 3 + 1}  # warm, kept, mixed
    else:
        assert _codes(kept) == {"tenant_not_found"}


async def _cap_race(core: Core, cap: int, requests: int, size: int
                    ) -> tuple[int, list[QueueFull]]:
    await f.tenant(core)
    await f.account(core, 2525)
    core.settings = dataclasses.replace(core.settings, max_queued_messages=cap)
    outcomes = await asyncio.gather(
        *(_send(core, *range(size * n, size * (n + 1))) for n in range(requests)),
        return_exceptions=True)
    stored = 0
    refused = []
    for outcome in outcomes:
        if isinstance(outcome, QueueFull):
            refused.append(outcome)
        else:
            assert isinstance(outcome, dict), repr(outcome)
            assert outcome["queued"] == size
            stored += size
    assert await core.store.fetch_value("count_waiting") == stored  # nothing of a 429
    return stored, refused


async def test_concurrent_requests_never_pass_the_cap(core: Core) -> None:
    stored, refused = await _cap_race(core, cap=10, requests=20, size=5)
    assert stored == 10
    assert len(refused) == 18
    assert "the request's 5 valid messages would pass it" in str(refused[0])
    assert "the limit is 10" in str(refused[0])


async def test_concurrent_requests_fill_the_queue_exactly_to_the_cap(core: Core) -> None:
    """Far from the cap the requests are stored together; near it one at a time, each
    counting afresh: the queue ends full, not over, and no request that fitted is refused."""
    stored, refused = await _cap_race(core, cap=100, requests=24, size=5)
    assert stored == 100
    assert len(refused) == 4


async def test_an_account_created_a_moment_ago_is_accepted_at_once(core: Core) -> None:
    """The tenant cache (one second) once refused messages for an account created right
    after a request had loaded the tenant: `accounts add` then a POST, as the README does.
    A refusal that an old cache entry may explain is checked against a fresh read."""
    await _two_accounts(core)  # the cache now holds acme with "main" and "other"
    await f.account(core, 2527, account_id="fresh")
    answer = await _send(core, "to-fresh", account_id="fresh")
    assert answer["queued"] == 1, answer
    with pytest.raises(AllRejected) as refused:  # an account that does not exist still is
        await _send(core, "to-nowhere", account_id="nowhere")
    assert {r["code"] for r in refused.value.rejected} == {"account_not_found"}
