"""The two write paths of add-messages, on SQLite and PostgreSQL.

Enqueue first tries to insert every message at once (``insert_all``: all new ids, the
common case); a unique conflict undoes that attempt and the general path decides message by
message (replace a resubmitted one, refuse a processed one). Both must give the same rows,
the same answer and one command-log row.
"""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.manager.core import ADMIN, Core, now
from mail_proxy.manager.enqueue import add_messages
from tests.support import factories as f

AUDIT = "POST /commands/add-messages"


async def _send(core: Core, *msgs: dict[str, Any]) -> dict[str, Any]:
    answer = await add_messages(core, {"tenant_id": "acme", "messages": list(msgs)}, ADMIN,
                                audit=AUDIT)
    answer.pop("_recorded", None)
    return answer


async def _log(core: Core) -> list[dict[str, Any]]:
    return await core.store.fetch("command_log_page", after_id=0, tenant_id=None, since=None,
                                  until=None, endpoint=None, limit=100)


async def _claim(core: Core) -> list[dict[str, Any]]:
    """Move every queued message of acme/main to 'sending' (a processed status)."""
    async with core.store.transaction() as tx:
        return await tx.fetch("claim_account", me="test:1", now=now(), lease=60,
                              tenant_id="acme", account_id="main", suspended=[], n=100)


def _row(i: int, **fields: Any) -> dict[str, Any]:
    row = {"tenant_id": "acme", "id": f"r-{i}", "account_id": "main", "status": "queued",
           "priority": 2, "batch_code": None, "deferred_ts": None, "now": 1,
           "next_attempt_at": 1, "smtp_message_id": f"<{i}@x.test>", "is_pec": 0,
           "has_secrets": 0, "payload": "{}"}
    row.update(fields)
    return row


async def test_insert_all_writes_everything_or_nothing(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    log = {"command_ts": 1, "actor": "admin", "endpoint": AUDIT, "tenant_id": "acme",
           "payload": "{}", "response_status": 200, "response_body": "{}"}
    async with core.store.transaction() as tx:
        assert await tx.insert_all("message_insert", [_row(1), _row(2)],
                                   "command_log_insert", log) is True
    async with core.store.transaction() as tx:
        # r-3 is new but r-2 exists: nothing of this call may remain, and the transaction
        # must still be usable afterwards.
        assert await tx.insert_all("message_insert", [_row(3), _row(2)],
                                   "command_log_insert", log) is False
        assert await tx.insert_all("message_insert", [_row(4)]) is True
    ids = {r["id"] for r in await core.store.fetch(
        "message_statuses", tenant_id="acme", ids=["r-1", "r-2", "r-3", "r-4"])}
    assert ids == {"r-1", "r-2", "r-4"}
    assert len(await _log(core)) == 1


async def test_all_new_messages_take_one_insert_with_the_log_row(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    answer = await _send(core, *[f.message(i) for i in range(3)], {"id": "bad"})
    assert answer["queued"] == 3
    assert [r["code"] for r in answer["rejected"]] == ["missing_field"]
    rows = await _log(core)
    assert len(rows) == 1
    assert json.loads(rows[0]["response_body"]) == answer


async def test_resubmission_and_processed_ids_take_the_general_path(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await _send(core, f.message(0))
    assert [r["id"] for r in await _claim(core)] == ["m-0"]  # m-0 is now being sent
    await _send(core, f.message(1, subject="first"))
    answer = await _send(core, f.message(0), f.message(1, subject="second"), f.message(2))
    assert answer["queued"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [(0, "already_processed")]
    m1 = await core.store.fetch_one("message_get", tenant_id="acme", id="m-1")
    assert m1 is not None and json.loads(m1["payload"])["subject"] == "second"
    events = await core.store.fetch("message_events", pk=m1["pk"])
    assert [json.loads(e["metadata"] or "{}").get("cause") for e in events
            if e["event_type"] == "queued"] == ["resubmitted"]
    assert await core.store.fetch_one("message_get", tenant_id="acme", id="m-2") is not None
    last = (await _log(core))[-1]
    assert json.loads(last["response_body"]) == answer
    assert len(await _log(core)) == 3  # one row per request, never two


async def test_duplicate_ids_across_grouped_requests(core) -> None:
    """Two concurrent requests with the same id share one transaction on SQLite: the second
    finds the first's uncommitted row and replaces it, as it would one request later."""
    import asyncio

    await f.tenant(core)
    await f.account(core, 2525)
    first, second = await asyncio.gather(_send(core, f.message(5, subject="a")),
                                         _send(core, f.message(5, subject="b")))
    assert first["queued"] == second["queued"] == 1
    rows = await core.store.fetch("message_statuses", tenant_id="acme", ids=["m-5"])
    assert len(rows) == 1


async def test_insert_all_of_many_rows_keeps_order_and_values(core) -> None:
    """1,300 rows: several statements on SQLite (multi-row INSERTs of up to 512 rows), one
    on PostgreSQL (arrays unnested into rows)."""
    await f.tenant(core)
    await f.account(core, 2525)
    rows = [_row(i, now=100 + i, next_attempt_at=200 + i, priority=i % 4,
                 batch_code=None if i % 3 else f"b{i}", payload=json.dumps({"n": i}))
            for i in range(1300)]
    async with core.store.transaction() as tx:
        assert await tx.insert_all("message_insert", rows) is True
    ids = [r["id"] for r in rows]
    stored = {r["id"]: r for r in await core.store.fetch("message_statuses", tenant_id="acme",
                                                           ids=ids)}
    assert len(stored) == 1300
    if core.store.backend == "postgresql":  # one unnest INSERT, not one statement per row
        assert core.store._unnest.get("message_insert") is not None
    pks = [stored[i]["pk"] for i in ids]
    assert pks == sorted(pks)  # inserted in the order given: FIFO position follows it
    for i in (0, 511, 512, 1023, 1299):
        got = await core.store.fetch_one("message_get", tenant_id="acme", id=f"r-{i}")
        assert got is not None
        assert (got["created_at"], got["updated_at"], got["next_attempt_at"], got["priority"],
                got["batch_code"], json.loads(got["payload"])) == (
            100 + i, 100 + i, 200 + i, i % 4, None if i % 3 else f"b{i}", {"n": i})


async def test_insert_all_conflict_in_a_late_statement_undoes_everything(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    async with core.store.transaction() as tx:
        assert await tx.insert_all("message_insert", [_row(2000)]) is True
    rows = [_row(i) for i in range(700)] + [_row(2000)]
    async with core.store.transaction() as tx:
        assert await tx.insert_all("message_insert", rows) is False
    left = await core.store.fetch("message_statuses", tenant_id="acme",
                                  ids=[r["id"] for r in rows])
    assert [r["id"] for r in left] == ["r-2000"]


def test_multi_row_insert_stays_under_a_low_variable_limit() -> None:
    """SQLite may be built with SQLITE_MAX_VARIABLE_NUMBER = 999 (the default before 3.32):
    statements must then carry fewer rows."""
    import sqlite3

    from mail_proxy.store import queries
    from mail_proxy.store.sqlite_statements import multi_row as _multi_row

    multi = _multi_row(queries.load("sqlite")["message_insert"])
    assert multi is not None
    raw = sqlite3.connect(":memory:")
    raw.execute("CREATE TABLE messages (pk INTEGER PRIMARY KEY, tenant_id, id, account_id,"
                " status, priority, batch_code, deferred_ts, created_at, updated_at,"
                " next_attempt_at, attempts, smtp_message_id, is_pec, has_secrets, payload)")
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)  # 7 rows of 14 parameters
    multi.run(raw, [_row(i) for i in range(50)])
    assert [r[0] for r in raw.execute("SELECT id FROM messages ORDER BY pk")] == [
        f"r-{i}" for i in range(50)]
    assert raw.execute("SELECT count(*) FROM messages WHERE attempts = 0"
                       " AND created_at = updated_at").fetchone() == (50,)


def test_only_plain_single_row_inserts_are_rewritten() -> None:
    from mail_proxy.store.sqlite_statements import multi_row as _multi_row

    assert _multi_row("INSERT INTO t (a, b) VALUES (:a, :b)") is not None
    assert _multi_row("INSERT INTO t (a) VALUES (:a) ON CONFLICT DO NOTHING") is None
    assert _multi_row("INSERT INTO t (a) SELECT :a") is None
    assert _multi_row("INSERT INTO t (a) VALUES (:a) RETURNING pk") is None


def test_postgresql_batches_become_one_unnest_insert() -> None:
    """On PostgreSQL a batch is one INSERT ... SELECT FROM unnest(arrays), in the batch's
    order; only plain single-row INSERTs with scalar parameters are rewritten."""
    from mail_proxy.store import queries
    from mail_proxy.store.postgres import convert, unnest_insert

    sql, names = convert(queries.load("postgresql")["message_insert"])
    kinds = [("text", "scalar")] * len(names)
    bulk = unnest_insert(sql, kinds)
    assert bulk is not None and bulk.startswith("INSERT INTO messages (")
    assert f"${len(names)}::text[]" in bulk and f"${len(names) + 1}" not in bulk
    assert bulk.endswith("WITH ORDINALITY AS u(" + ", ".join(
        f"p{i}" for i in range(1, len(names) + 1)) + ", n) ORDER BY u.n")
    # the same parameter used twice (:now for created_at and updated_at) is one array
    assert bulk.count(f"u.p{names.index('now') + 1}") == 2
    plain = "INSERT INTO t (a, b) VALUES ($1, $2)"
    assert unnest_insert(plain, [("int8", "scalar"), ("bool", "scalar")]) == (
        "INSERT INTO t (a, b) SELECT u.p1, u.p2 FROM unnest($1::int8[], $2::bool[]) "
        "WITH ORDINALITY AS u(p1, p2, n) ORDER BY u.n")
    assert unnest_insert(plain, [("int8", "scalar"), ("_text", "array")]) is None
    assert unnest_insert(plain + " ON CONFLICT DO NOTHING", [("int8", "scalar")] * 2) is None
    assert unnest_insert(plain + " RETURNING pk", [("int8", "scalar")] * 2) is None
    assert unnest_insert("INSERT INTO t (a) SELECT $1", [("int8", "scalar")]) is None
    assert unnest_insert("INSERT INTO t (a) VALUES (lower($1))", [("text", "scalar")]) is None
