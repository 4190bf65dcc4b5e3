"""``Store.grouped_insert``: concurrent enqueues share a transaction, yet each caller gets
its own answer, on SQLite and PostgreSQL.

On SQLite a whole group is one hand-off to the writer's thread and, when nothing conflicts,
one multi-row INSERT for all callers; a conflict or a constraint error falls back to running
the callers one by one, so that only the caller at fault is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mail_proxy.store.sqlite import SqliteStore
from tests.store.test_enqueue_paths import AUDIT, _row
from tests.support import factories as f


def _log(tag: str) -> dict[str, Any]:
    return {"command_ts": 1, "actor": "admin", "endpoint": AUDIT, "tenant_id": "acme",
            "payload": tag, "response_status": 200, "response_body": "{}"}


async def _ids(core) -> set[str]:
    rows = await core.store.fetch("message_statuses", tenant_id="acme",
                                  ids=[f"r-{i}" for i in range(200)])
    return {r["id"] for r in rows}


async def _logged(core) -> list[str]:
    rows = await core.store.fetch("command_log_page", after_id=0, tenant_id=None, since=None,
                                  until=None, endpoint=None, limit=100)
    return sorted(r["payload"] for r in rows)


async def _insert(core, tag: str, *rows: dict[str, Any]) -> bool:
    return bool(await core.store.grouped_insert("message_insert", list(rows),
                                                "command_log_insert", _log(tag)))


async def test_each_concurrent_caller_gets_its_own_answer(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    assert await _insert(core, "first", _row(100))
    a, b, c = await asyncio.gather(_insert(core, "a", _row(1), _row(2)),
                                   _insert(core, "b", _row(3), _row(100)),  # r-100 exists
                                   _insert(core, "c", _row(4)))
    assert (a, b, c) == (True, False, True)
    assert await _ids(core) == {"r-1", "r-2", "r-4", "r-100"}  # nothing of b
    assert await _logged(core) == ["a", "c", "first"]


async def test_a_constraint_error_fails_only_its_caller(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    results = await asyncio.gather(_insert(core, "a", _row(1)),
                                   _insert(core, "b", _row(2), _row(3, account_id=None)),
                                   _insert(core, "c", _row(4)), return_exceptions=True)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], Exception) and "NULL" in str(results[1]).upper()
    assert await _ids(core) == {"r-1", "r-4"}
    assert await _logged(core) == ["a", "c"]


async def test_a_lone_caller_is_answered_after_its_commit(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    assert await _insert(core, "solo", _row(7))
    assert await _ids(core) == {"r-7"}
    assert await _insert(core, "again", _row(7)) is False
    assert await _logged(core) == ["solo"]


# -- SQLite: how a group reaches the writer's thread ------------------------------------------

@pytest.fixture
async def sqlite_core(sqlite_url: str, keyring):
    from mail_proxy.manager.core import Core

    c = await Core.open(sqlite_url, keyring, name="test")
    try:
        yield c
    finally:
        await c.close()


def _count_hand_offs(store: SqliteStore) -> list[int]:
    handed: list[int] = []
    plain = store._hand_transaction

    async def counting(fn: Any) -> Any:
        handed.append(1)
        return await plain(fn)

    store._hand_transaction = counting  # type: ignore[method-assign]
    return handed


async def test_a_group_of_inserts_is_one_transaction_on_sqlite(sqlite_core) -> None:
    core = sqlite_core
    await f.tenant(core)
    await f.account(core, 2525)
    handed = _count_hand_offs(core.store)
    results = await asyncio.gather(*(_insert(core, f"t{i}", _row(i)) for i in range(20)))
    assert results == [True] * 20
    assert len(handed) == 1  # one BEGIN ... COMMIT for the twenty callers
    assert await _ids(core) == {f"r-{i}" for i in range(20)}
    assert len(await _logged(core)) == 20
    rows = await core.store.fetch("message_statuses", tenant_id="acme",
                                  ids=[f"r-{i}" for i in range(20)])
    by_id = {r["id"]: r["pk"] for r in rows}
    assert [by_id[f"r-{i}"] for i in range(20)] == sorted(by_id.values())  # callers' order


async def test_transactions_and_groups_interleave_safely_on_sqlite(sqlite_core) -> None:
    """A group's hand-off is queued while another caller holds an open transaction across
    several hand-offs: the write lock orders them, and nothing runs inside another's."""
    core = sqlite_core
    await f.tenant(core)
    await f.account(core, 2525)

    async def long_transaction(n: int) -> int:
        async with core.store.transaction() as tx:
            await tx.execute("tenant_set_suspended", id="acme", suspended_batches=[f"x{n}"],
                             now=n)
            await asyncio.sleep(0)
            return await tx.execute("tenant_set_suspended", id="acme",
                                    suspended_batches=[], now=n)

    work = [_insert(core, f"t{i}", _row(i)) for i in range(40)]
    work += [long_transaction(n) for n in range(10)]
    work += [core.store.apply_steps([("tenant_set_suspended",
                                      {"id": "acme", "suspended_batches": [], "now": n},
                                      None, None)]) for n in range(10)]
    results = await asyncio.gather(*work)
    assert results[:40] == [True] * 40
    assert results[40:50] == [1] * 10 and results[50:] == [[1]] * 10
    assert len(await _ids(core)) == 40


async def test_a_full_database_fails_the_group_and_recovers_on_sqlite(sqlite_core) -> None:
    """SQLITE_FULL (here: a page limit) in the middle of a group: every caller is told the
    store is unavailable, nothing of the group remains, and the next group works."""
    from mail_proxy.store.errors import StoreUnavailable

    core = sqlite_core
    await f.tenant(core)
    await f.account(core, 2525)
    writer = core.store._writer
    pages = (await (await writer.execute("PRAGMA page_count")).fetchone())[0]
    await writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = [[_row(100 + 10 * i + j, payload="x" * 3000) for j in range(10)] for i in range(5)]
    results = await asyncio.gather(*(_insert(core, f"full{i}", *rows)
                                     for i, rows in enumerate(big)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert await _ids(core) == set() and await _logged(core) == []
    await writer.execute("PRAGMA max_page_count = 1073741823")
    assert await _insert(core, "after", _row(1))
    assert await _ids(core) == {"r-1"} and await _logged(core) == ["after"]
