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


def _query(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
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


def _db_url(instance: str) -> str | None:
    from mail_proxy.instance.config import resolve_process_config

    with contextlib.suppress(MailProxyError, OSError):
        return resolve_process_config(instance, need_token=False).db_url
    return None


def _tenant_ids(instance: str) -> list[str]:
    url = _db_url(instance)
    return [str(r[0]) for r in _query(url, "SELECT id FROM tenants ORDER BY id")] if url else []


def _account_ids(instance: str, tenant: str) -> list[str]:
    url = _db_url(instance)
    if not url:
        return []
    rows = _query(url, "SELECT id FROM accounts WHERE tenant_id = ? ORDER BY id", (tenant,))
    return [str(r[0]) for r in rows]


def _message_counts(instance: str) -> dict[str, int] | None:
    url = _db_url(instance)
    path = sqlite_path(url) if url else None
    if path is None or not os.path.exists(path):
        return None
    rows = _query(url, "SELECT status, COUNT(*) FROM messages GROUP BY status")
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
