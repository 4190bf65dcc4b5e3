"""Read-only peeks into an instance database for the CLI frame (grammar, completion, status).

SQLite is opened read-only with a time limit. Two flavours: completion gets empty answers on
any failure and prints nothing (cli.md §4); the grammar and ``use`` get the real error, the
one the instance-level commands print, because "tenant 'x' not found" about a tenant that
exists sends the user looking in the wrong place. They are the hook the data layer can
replace: set ``TENANT_IDS``/``ACCOUNT_IDS``/``MESSAGE_COUNTS`` to functions of the same shape.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mail_proxy.errors import MailProxyError, StorageError

# completion, status and the grammar: a prompt must not hang (cli.md §4); completion
# shares the grammar's lookup, so one limit serves both
TIME_LIMIT = 1.0


def sqlite_path(db_url: str) -> str | None:
    if db_url.startswith("sqlite:///"):
        return db_url[len("sqlite://"):]
    return None


def sqlite_uri(path: str, mode: str = "ro") -> str:
    """A ``file:`` URI for ``path``: '#', '?' and '%' are escaped, or SQLite would cut the
    path at them (or decode them) and open another file."""
    return f"{Path(os.path.abspath(path)).as_uri()}?mode={mode}"


def _pg_query(db_url: str, password: str | None, sql: str,
              params: tuple[Any, ...], limit: float) -> list[tuple[Any, ...]]:
    """The same peek on PostgreSQL: one short connection, the same time limit."""
    import asyncio

    import asyncpg

    from mail_proxy.instance.db_urls import redact_url
    from mail_proxy.store.postgres import parse_url

    try:
        dsn, schema = parse_url(db_url)
    except ValueError as exc:
        raise StorageError(f"cannot read PostgreSQL database {redact_url(db_url)}: "
                           f"{exc}") from None
    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("?", f"${n}", 1)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, password=password, timeout=limit,
                                     server_settings={"search_path": schema} if schema else None)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *params, timeout=limit)]
        finally:
            await conn.close()

    try:
        return asyncio.run(asyncio.wait_for(run(), limit * 2))
    except asyncpg.UndefinedTableError:
        return []  # not migrated yet: nothing in it
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError,
            asyncpg.InterfaceError) as exc:
        reason = str(exc) or type(exc).__name__
        raise StorageError(f"cannot read PostgreSQL database {redact_url(db_url)}: "
                           f"{reason}") from None


def _sqlite_query(path: str, sql: str, params: tuple[Any, ...],
                  limit: float) -> list[tuple[Any, ...]]:
    import sqlite3

    if not os.path.exists(path):
        return []  # created by the first command that writes: nothing in it yet
    deadline = time.monotonic() + limit
    try:
        conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=limit)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open SQLite database {path}: {exc}") from None
    # abort a query that runs past the time limit (the progress handler returning 1 stops it)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        return list(conn.execute(sql, params))
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table"):
            return []  # an empty file, not migrated yet: nothing in it
        raise StorageError(f"cannot open SQLite database {path}: {exc}") from None
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open SQLite database {path}: {exc}") from None
    finally:
        conn.close()


def _query(db_url: str, sql: str, params: tuple[Any, ...] = (),
           password: str | None = None, limit: float = TIME_LIMIT) -> list[tuple[Any, ...]]:
    """Rows of ``sql``; StorageError (with the reason) when the database cannot be read."""
    if db_url.startswith(("postgresql://", "postgres://")):
        try:
            return _pg_query(db_url, password, sql, params, limit)
        except ImportError:
            raise StorageError("cannot read the PostgreSQL database: the postgresql extra "
                               "(asyncpg) is not installed") from None
    path = sqlite_path(db_url)
    if path is None:
        return []
    return _sqlite_query(path, sql, params, limit)


def _db(instance: str) -> tuple[str, str | None]:
    """(database URL, PostgreSQL password) of an instance; its errors propagate."""
    from mail_proxy.instance.config import resolve_process_config

    config = resolve_process_config(instance, need_token=False)
    return config.db_url, config.db_password


def checked_tenant_ids(instance: str, limit: float = TIME_LIMIT) -> list[str]:
    """Tenant ids, or the MailProxyError that stops the instance's own commands: a missing
    SQLite file is that error (exit 3), not "no tenants" (then "tenant 'x' not found")."""
    from mail_proxy.instance.config import resolve_process_config
    from mail_proxy.instance.database import check_database

    config = resolve_process_config(instance, need_token=False)
    check_database(config)
    url, password = config.db_url, config.db_password
    rows = _query(url, "SELECT id FROM tenants ORDER BY id", password=password, limit=limit)
    return [str(r[0]) for r in rows]


def _tenant_ids(instance: str) -> list[str]:
    with contextlib.suppress(MailProxyError, OSError):
        return checked_tenant_ids(instance, TIME_LIMIT)
    return []


def _account_ids(instance: str, tenant: str) -> list[str]:
    with contextlib.suppress(MailProxyError, OSError):
        url, password = _db(instance)
        rows = _query(url, "SELECT id FROM accounts WHERE tenant_id = ? ORDER BY id",
                      (tenant,), password=password)
        return [str(r[0]) for r in rows]
    return []


def _message_counts(instance: str) -> dict[str, int] | None:
    """Messages by status; None when there is no database yet; StorageError when it
    cannot be read (``status`` shows why instead of "none")."""
    from mail_proxy.instance.config import stored_database

    url, password = stored_database(instance)
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        return None
    rows = _query(url, "SELECT status, COUNT(*) FROM messages GROUP BY status",
                  password=password)
    return {str(status): int(count) for status, count in rows}


TENANT_IDS: Callable[[str], list[str]] = _tenant_ids
ACCOUNT_IDS: Callable[[str, str], list[str]] = _account_ids
MESSAGE_COUNTS: Callable[[str], dict[str, int] | None] = _message_counts


def tenant_ids(instance: str) -> list[str]:
    """For completion: [] on any failure."""
    return TENANT_IDS(instance)


def account_ids(instance: str, tenant: str) -> list[str]:
    """For completion: [] on any failure."""
    return ACCOUNT_IDS(instance, tenant)


def message_counts(instance: str) -> dict[str, int] | None:
    """For ``status``: raises MailProxyError when the counts cannot be read."""
    return MESSAGE_COUNTS(instance)
