"""Opening a SQLite file that is not a usable database: a clear error, and nothing left
running (each aiosqlite connection has a thread that keeps the process alive until closed)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from mail_proxy.store.errors import StoreUnavailable
from mail_proxy.store.sqlite import SqliteStore


def _damaged(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    with open(path, "r+b") as f:
        f.seek(2 * 1024)
        f.write(os.urandom(4 * 1024))


@pytest.mark.parametrize("content", ["damaged", "not a database"])
async def test_a_bad_file_is_refused_and_leaves_no_thread(tmp_path: Path, content: str) -> None:
    path = tmp_path / "db.sqlite"
    if content == "damaged":
        _damaged(path)
    else:
        path.write_bytes(b"these are not the pages of a database\n" * 200)
    before = set(threading.enumerate())
    store = SqliteStore(str(path))
    with pytest.raises(StoreUnavailable, match=f"cannot open SQLite database {path}"):
        await store.open()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for thread in left:
        thread.join(timeout=5)  # a stopping thread ends at once
    assert not [t for t in left if t.is_alive()]


async def test_opening_a_migrated_file_takes_no_write_lock(tmp_path: Path) -> None:
    """A CLI read (`stats`, `list`) opens the store while another process holds the write
    lock for long (a rotation, a big delete): WAL lets it read, so opening must not wait
    for the lock (5 s busy timeout, then "database is locked")."""
    import time

    path = tmp_path / "db.sqlite"
    first = SqliteStore(str(path))
    await first.open()  # creates and migrates
    await first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        store = SqliteStore(str(path))
        await store.open()
        assert await store.fetch_one("tenant_get", id="acme") is None
        await store.close()
        assert time.monotonic() - started < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_file_that_cannot_be_created_leaves_no_late_thread_traceback(tmp_path: Path) -> None:
    """A path in a folder that does not exist: aiosqlite stopped the connection's thread with
    a future nobody awaited, and when the loop had closed by then the thread printed
    "RuntimeError: Event loop is closed" tracebacks before `serve`'s one-line error (about
    half the runs, ops hunt 2026-11-25). Twenty opens, each on a loop closed right after."""
    import subprocess
    import sys

    script = (
        "import asyncio\n"
        "from mail_proxy.store.errors import StoreUnavailable\n"
        "from mail_proxy.store.sqlite import SqliteStore\n"
        "async def main():\n"
        f"    store = SqliteStore({str(tmp_path / 'missing' / 'db.sqlite')!r})\n"
        "    try:\n"
        "        await store.open()\n"
        "    except StoreUnavailable:\n"
        "        pass\n"
        "for _ in range(20):\n"
        "    asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


async def test_a_writer_that_sqlite_opened_read_only_is_refused(tmp_path: Path) -> None:
    """Disk-full hunt: with the WAL not writable when a worker started, SQLite opened it
    read-only without a word; the worker reported healthy and answered 503 for ever. The
    worker's start checks its writer and is refused as "unreachable" (exit 75, retried)."""
    import aiosqlite

    from mail_proxy.store.errors import StoreUnreachable

    path = tmp_path / "mail_service.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.check_writable()  # a writable one passes, and holds no lock after
        await store.check_writable()
        writable = store._writer
        store._writer = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True,
                                                isolation_level=None)
        try:
            with pytest.raises(StoreUnreachable, match="cannot be written"):
                await store.check_writable()
        finally:
            await store._writer.close()
            store._writer = writable
    finally:
        await store.close()
