"""Read-only peeks into an instance database for the CLI frame (grammar, completion, status).

These are deliberately tiny and forgiving: SQLite opened read-only with a 1 s limit, empty
answers on any failure, no output. They are the hook the data layer can replace: set
``TENANT_IDS``/``ACCOUNT_IDS``/``MESSAGE_COUNTS`` to functions of the same shape.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from mail_proxy.errors import MailProxyError

TIME_LIMIT = 1.0


def sqlite_path(db_url: str) -> str | None:
    if db_url.startswith("sqlite:///"):
        return db_url[len("sqlite://"):]
    return None


def _pg_query(db_url: str, password: str | None, sql: str,
              params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The same peek on PostgreSQL: one short connection, the same time limit."""
    import asyncio

    import asyncpg

    from mail_proxy.store.postgres import parse_url

    dsn, schema = parse_url(db_url)
    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("?", f"${n}", 1)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, password=password, timeout=TIME_LIMIT,
                                     server_settings={"search_path": schema} if schema else None)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *params, timeout=TIME_LIMIT)]
        finally:
            await conn.close()

    try:
        return asyncio.run(asyncio.wait_for(run(), TIME_LIMIT * 2))
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return []


def _query(db_url: str, sql: str, params: tuple[Any, ...] = (),
           password: str | None = None) -> list[tuple[Any, ...]]:
    if db_url.startswith(("postgresql://", "postgres://")):
        try:
            return _pg_query(db_url, password, sql, params)
        except ImportError:  # the postgresql extra is not installed
            return []
    path = sqlite_path(db_url)
    if path is None or not os.path.exists(path):
        return []
    import sqlite3

    deadline = time.monotonic() + TIME_LIMIT
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIME_LIMIT)
    except sqlite3.Error:
        return []
    # abort a query that runs past the time limit (the progress handler returning 1 stops it)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        return list(conn.execute(sql, params))
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def _db(instance: str) -> tuple[str, str | None] | None:
    """(database URL, PostgreSQL password) of an instance, or None."""
    from mail_proxy.instance.config import resolve_process_config

    with contextlib.suppress(MailProxyError, OSError):
        config = resolve_process_config(instance, need_token=False)
        return config.db_url, config.db_password
    return None


def _tenant_ids(instance: str) -> list[str]:
    db = _db(instance)
    if db is None:
        return []
    return [str(r[0]) for r in _query(db[0], "SELECT id FROM tenants ORDER BY id",
                                      password=db[1])]


def _account_ids(instance: str, tenant: str) -> list[str]:
    db = _db(instance)
    if db is None:
        return []
    rows = _query(db[0], "SELECT id FROM accounts WHERE tenant_id = ? ORDER BY id", (tenant,),
                  password=db[1])
    return [str(r[0]) for r in rows]


def _message_counts(instance: str) -> dict[str, int] | None:
    db = _db(instance)
    if db is None:
        return None
    path = sqlite_path(db[0])
    if path is not None and not os.path.exists(path):
        return None
    rows = _query(db[0], "SELECT status, COUNT(*) FROM messages GROUP BY status",
                  password=db[1])
    return {str(status): int(count) for status, count in rows}


TENANT_IDS: Callable[[str], list[str]] = _tenant_ids
ACCOUNT_IDS: Callable[[str, str], list[str]] = _account_ids
MESSAGE_COUNTS: Callable[[str], dict[str, int] | None] = _message_counts


def tenant_ids(instance: str) -> list[str]:
    return TENANT_IDS(instance)


def account_ids(instance: str, tenant: str) -> list[str]:
    return ACCOUNT_IDS(instance, tenant)


def message_counts(instance: str) -> dict[str, int] | None:
    return MESSAGE_COUNTS(instance)
