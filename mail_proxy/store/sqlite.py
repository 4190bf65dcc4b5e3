"""SQLite backend: WAL, one writer connection inside BEGIN IMMEDIATE, one reader connection.

aiosqlite runs each connection in its own thread, so no query blocks the event loop.
Concurrent :meth:`SqliteStore.grouped` callers share one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from mail_proxy.errors import SchemaTooNew
from mail_proxy.store import queries as named
from mail_proxy.store.base import Guard, Step
from mail_proxy.store.errors import StoreUnavailable, StoreUnreachable
from mail_proxy.store.sqlite_jobs import InsertAll, run_isolated, translate
from mail_proxy.store.sqlite_statements import (
    bind_steps,
    bind_values,
    rowcount,
    run_steps,
)

T = TypeVar("T")
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
           "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 5000")
# The writer only (see docs/decisions/performance.md, "WAL checkpoints and page cache"):
# - a checkpoint every 1,000 WAL pages (SQLite's default) ran on almost every commit of a
#   1,000-message batch (12 indexes dirty over 1,000 pages), in the committing request;
#   10,000 pages (40 MiB at 4 KiB pages) checkpoints a tenth as often and writes each page
#   touched by several commits once. journal_size_limit truncates the WAL back to that
#   size after a checkpoint, so the file stays bounded on disk;
# - the default 2 MiB page cache no longer held the index pages an insert walks once the
#   table has ~10^5 rows; 8 MiB does, for ~10^6.
WRITER_PRAGMAS = ("PRAGMA wal_autocheckpoint = 10000", "PRAGMA journal_size_limit = 41943040",
                  "PRAGMA cache_size = -8192")


def split_statements(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip()
                               for ln in buf.splitlines()):
        statements.append(buf.strip())
    return statements


class _Conn:
    """Query-name resolution and error translation over one aiosqlite connection.

    Transaction control statements (BEGIN, SAVEPOINT, RELEASE) are *deferred*: they run on
    the connection's thread just before the next statement, in the same hand-off. Each
    hand-off to aiosqlite's thread costs a queue put, a thread wake-up and a loop wake-up,
    which dominated small transactions (an enqueue went through four of them).
    """

    def __init__(self, conn: aiosqlite.Connection, queries: dict[str, str]) -> None:
        self._conn = conn
        self._queries = queries
        self._pending: list[str] = []

    def defer(self, sql: str) -> None:
        self._pending.append(sql)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection's thread after the deferred statements: one
        hand-off per call, whatever the call (aiosqlite's own ``execute`` takes a second one
        to close the cursor)."""
        pending, self._pending = self._pending, []

        def run() -> T:
            raw = self._conn._conn  # only ever touched on aiosqlite's own thread
            for sql in pending:
                raw.execute(sql)
            return fn(raw)

        try:
            return await self._conn._execute(run)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def fetch(self, query: str, **params: Any) -> list[dict[str, Any]]:
        sql, values = self._queries[query], bind_values(params)
        rows = await self._run(lambda raw: raw.execute(sql, values).fetchall())
        return [dict(r) for r in rows]

    async def fetch_one(self, query: str, **params: Any) -> dict[str, Any] | None:
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None

    async def fetch_value(self, query: str, **params: Any) -> Any:
        row = await self.fetch_one(query, **params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: str, **params: Any) -> int:
        sql, values = self._queries[query], bind_values(params)
        return await self._run(lambda raw: rowcount(raw, sql, values))

    async def execute_then_many(self, steps: list[Step]) -> list[int]:
        """Each step's query, and its ``then`` (may be None) when the query changed a row,
        in one hand-off to the database thread."""
        work = bind_steps(self._queries, steps)
        return await self._run(lambda raw: run_steps(raw, work))

    async def executemany(self, query: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        sql, values = self._queries[query], [bind_values(r) for r in rows]
        await self._run(lambda raw: raw.executemany(sql, values).close())

    async def insert_all(self, query: str, rows: list[dict[str, Any]],
                         then: str | None = None,
                         then_params: dict[str, Any] | None = None,
                         guard: Guard | None = None) -> bool:
        """Insert every row, or none of them: False, with nothing written, when one row
        breaks a unique constraint; otherwise run ``then`` too and return True. A
        ``guard`` returning rows raises RowsMissing, nothing written.

        Enqueue inserts new messages this way instead of first asking which ids exist: in
        the common case (all new) the rows and the command-log row cost one hand-off to
        the database thread, and nothing is read but the guard's few index entries.
        """
        return await self._run(InsertAll(self._queries, query, rows, then, then_params, guard))

    async def raw(self, sql: str) -> None:
        await self._run(lambda raw: raw.execute(sql).close())


def _hand_off(conn: aiosqlite.Connection, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Queue ``fn`` on the connection's thread now, as aiosqlite's ``_execute`` does when
    it is awaited: the caller gets the future and can let go of its lock first."""
    if conn._connection is None or not getattr(conn, "_running", True):
        raise StoreUnavailable("the database connection is closed")
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    conn._tx.put_nowait((future, fn))
    return future


def _error_of(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return StoreUnavailable("the database connection was closed")
    return future.exception()


def _settle(batch: list[_Grouped], error: BaseException | None,
            done: asyncio.Future[list[tuple[Any, BaseException | None]]] | None) -> None:
    """Answer the callers of a job group from what the database thread returned."""
    if error is not None:
        if isinstance(error, sqlite3.Error):
            error = translate(error)
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(error)
        return
    assert done is not None
    for (_, future, _), (result, own) in zip(batch, done.result(), strict=True):
        _answer(future, result, own)


def _answer(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """A grouped caller's result or own error (unless it stopped waiting)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# Job groups queued on the writer's thread at once: one being written, the next waiting
# behind it, so the thread never waits for the event loop between two commits.
MAX_GROUPS_IN_FLIGHT = 2
# a grouped caller: its work on the shared transaction, its future, and, for a plain job
# (grouped_insert), the function the database thread can run for it directly
_Grouped = tuple[Callable[[Any], Awaitable[Any]], "asyncio.Future[Any]",
                 Callable[[sqlite3.Connection], Any] | None]


class SqliteStore:
    backend = "sqlite"

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._uri = Path(os.path.abspath(path)).as_uri()
        self._queries = named.load("sqlite")
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._read: _Conn | None = None
        self._write_lock = asyncio.Lock()
        self._group_queue: list[_Grouped] = []
        self._group_task: asyncio.Task[None] | None = None

    async def _connect(self, *, writer: bool = False) -> aiosqlite.Connection:
        if self.readonly:
            pending = aiosqlite.connect(self._uri + "?mode=ro", uri=True, isolation_level=None)
            pragmas: tuple[str, ...] = ("PRAGMA busy_timeout = 1000",)
        else:
            pending = aiosqlite.connect(self.path, isolation_level=None)
            pragmas = PRAGMAS + (WRITER_PRAGMAS if writer else ())
        try:
            conn = await pending
        except BaseException:
            # aiosqlite stops the connection's thread with a future of its own that nobody
            # awaits: let the thread end while this loop runs, or its last hand-back hit a
            # closed loop and printed a traceback ("Event loop is closed") before the
            # one-line error of `serve` (ops hunt, 2026-11-25)
            await asyncio.to_thread(pending._thread.join, 5)
            raise
        try:
            for pragma in pragmas:
                await conn.execute(pragma)
        except BaseException:
            # A file that opens but is not a database (or is damaged) fails here: the
            # connection's thread must stop too, or the process could never exit.
            with contextlib.suppress(sqlite3.Error, ValueError):
                await conn.close()
            raise
        conn.row_factory = sqlite3.Row
        return conn

    async def open(self) -> None:
        try:
            if not self.readonly:
                self._writer = await self._connect(writer=True)
                await self._migrate()
            self._reader = await self._connect()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        self._read = _Conn(self._reader, self._queries)

    async def check_writable(self) -> None:
        """Write once and roll back: a worker whose connection SQLite
        opened read-only (the WAL or the file not writable at that moment: a file system
        remounted, a file left to another user) must not start. SQLite falls back to
        read-only without a word; such a worker reported healthy and answered 503 for
        ever, even once the file was writable again (disk-full hunt). Refused as
        "unreachable", the start is retried by the supervisor until it can write."""
        writer = self._writer
        if writer is None:
            return
        try:
            async with self._write_lock:
                # a real write, rolled back: a read-only connection takes BEGIN IMMEDIATE
                await writer.execute("BEGIN IMMEDIATE")
                try:
                    await writer.execute("UPDATE schema_migrations SET version = version")
                finally:
                    await writer.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreUnreachable(f"SQLite database {self.path} cannot be written: {exc}"
                                   ) from exc

    async def close(self) -> None:
        if self._group_task is not None:
            await asyncio.gather(self._group_task, return_exceptions=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError):
                    pass
        self._reader = self._writer = None

    async def _migrate(self) -> None:
        assert self._writer is not None
        w = self._writer
        known = named.migrations("sqlite")
        latest = known[-1][0] if known else 0
        if await self._up_to_date(w, {v for v, _, _ in known}):
            # The common case takes no write lock: a CLI command (a `stats` say) must not
            # wait behind, or fail on, a long write of another process (WAL reads never do).
            return
        await w.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY"
                        " KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        await w.execute("BEGIN IMMEDIATE")  # serialises concurrent starts
        try:
            rows = await w.execute_fetchall("SELECT version FROM schema_migrations")
            applied = {r[0] for r in rows}
            if applied and max(applied) > latest:
                raise SchemaTooNew(f"database schema {max(applied)} is newer than this "
                                   f"mail-proxy ({latest})")
            for version, name, sql in known:
                if version in applied:
                    continue
                for statement in split_statements(sql):
                    await w.execute(statement)
                await w.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                                (version, name, int(time.time())))
            await w.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk): "cannot rollback - no
            # transaction is active" must not replace the cause (disk-full hunt)
            with contextlib.suppress(sqlite3.Error):
                await w.execute("ROLLBACK")
            raise

    @staticmethod
    async def _up_to_date(conn: aiosqlite.Connection, known: set[int]) -> bool:
        """Every known migration applied and none newer (read without a write lock)."""
        try:
            rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
        except sqlite3.OperationalError:  # no such table: a new database
            return False
        return {r[0] for r in rows} == known

    # reads -----------------------------------------------------------------------------
    async def fetch(self, query: str, **params: Any) -> list[dict[str, Any]]:
        assert self._read is not None, "store is not open"
        return await self._read.fetch(query, **params)

    async def fetch_one(self, query: str, **params: Any) -> dict[str, Any] | None:
        assert self._read is not None, "store is not open"
        return await self._read.fetch_one(query, **params)

    async def fetch_value(self, query: str, **params: Any) -> Any:
        assert self._read is not None, "store is not open"
        return await self._read.fetch_value(query, **params)

    async def schema_version(self) -> int:
        assert self._reader is not None
        rows = list(await self._reader.execute_fetchall(
            "SELECT max(version) FROM schema_migrations"))
        return int(rows[0][0] or 0)

    # writes ----------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        if self._writer is None:
            raise StoreUnavailable("the database is open read-only")
        async with self._write_lock:
            tx = _Conn(self._writer, self._queries)
            tx.defer("BEGIN IMMEDIATE")  # sent with the first statement (or the COMMIT)
            try:
                yield tx
            except BaseException:
                await asyncio.shield(self._rollback())
                raise
            try:
                await tx.raw("COMMIT")
            except BaseException:
                await asyncio.shield(self._rollback())
                raise

    async def _rollback(self) -> None:
        assert self._writer is not None
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back

    async def apply_steps(self, steps: list[Step]) -> list[int]:
        work = bind_steps(self._queries, steps)
        return await self._in_own_transaction(lambda raw: run_steps(raw, work))

    async def apply_fetches(self, calls: list[tuple[str, dict[str, Any]]]
                            ) -> list[list[dict[str, Any]]]:
        work = [(self._queries[query], bind_values(params)) for query, params in calls]
        rows = await self._in_own_transaction(
            lambda raw: [raw.execute(sql, values).fetchall() for sql, values in work])
        return [[dict(r) for r in found] for found in rows]

    async def _in_own_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """BEGIN, ``fn`` and COMMIT in one hand-off: each hand-off costs the database
        thread a wait for the interpreter lock while the event loop is busy."""
        future = await self._hand_transaction(fn)
        try:
            return await future
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def _hand_transaction(self, fn: Callable[[sqlite3.Connection], T]
                                ) -> asyncio.Future[T]:
        """Queue BEGIN, ``fn`` and COMMIT (or ROLLBACK) as one function on the writer's
        thread; the future is its result (a raw ``sqlite3.Error`` on failure).

        The write lock is held only while queueing: the thread runs what it is given in
        order and this transaction is whole, so the next one (or another caller's BEGIN)
        may queue behind it at once. The thread then goes from one commit to the next
        instead of idling until the event loop has taken each result.
        """
        writer = self._writer
        if writer is None:
            raise StoreUnavailable("the database is open read-only")

        def run() -> T:
            raw = writer._conn  # only ever touched on aiosqlite's own thread
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(raw)
                raw.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise
            return result

        async with self._write_lock:
            return _hand_off(writer, run)

    async def grouped(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await self._join_group(work, None)

    async def grouped_insert(self, query: str, rows: list[dict[str, Any]],
                             then: str | None = None,
                             then_params: dict[str, Any] | None = None,
                             guard: Guard | None = None) -> bool:
        job = InsertAll(self._queries, query, rows, then, then_params, guard)
        return await self._join_group(lambda tx: tx._run(job), job)

    async def _join_group(self, work: Callable[[Any], Awaitable[T]],
                          job: Callable[[sqlite3.Connection], T] | None) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._group_queue.append((work, future, job))
        if self._group_task is None or self._group_task.done():
            self._group_task = asyncio.create_task(self._run_groups())
        return await future

    async def _run_groups(self) -> None:
        in_flight: list[asyncio.Future[Any]] = []  # job groups handed to the thread
        while self._group_queue or in_flight:
            if not self._group_queue or len(in_flight) >= MAX_GROUPS_IN_FLIGHT:
                await asyncio.wait(in_flight[:1])  # callers keep arriving meanwhile
                in_flight = [f for f in in_flight if not f.done()]
                continue
            batch, self._group_queue = self._group_queue, []
            if all(job is not None for _, _, job in batch):
                handed = await self._hand_jobs(batch)
                if handed is not None:
                    in_flight.append(handed)
            else:
                await self._run_works(batch)

    async def _hand_jobs(self, batch: list[_Grouped]) -> asyncio.Future[Any] | None:
        """A group of plain jobs (concurrent enqueues): BEGIN, the jobs each as if alone
        (``run_isolated``) and COMMIT in one hand-off to the database thread, instead of
        one hand-off per caller plus one for the COMMIT, each waiting for the event loop.
        The callers are answered when the thread is done (after the commit)."""
        jobs = [job for _, _, job in batch if job is not None]
        try:
            done = await self._hand_transaction(lambda raw: run_isolated(raw, jobs))
        except Exception as exc:  # read-only, or the connection is closed
            _settle(batch, exc, None)
            return None
        done.add_done_callback(lambda f: _settle(batch, _error_of(f), f))
        return done

    async def _run_works(self, batch: list[_Grouped]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            async with self.transaction() as tx:
                single = len(batch) == 1
                for work, future, _ in batch:
                    # savepoint statements ride along with the next real statement
                    if not single:
                        tx.defer("SAVEPOINT grouped")
                    try:
                        result = await work(tx)
                    except Exception as exc:
                        # The database itself failing (locked, full, I/O) fails the
                        # whole group: nothing of it was committed or acknowledged.
                        if single or isinstance(exc, StoreUnavailable):
                            raise
                        await tx.raw("ROLLBACK TO grouped")
                        tx.defer("RELEASE grouped")
                        outcomes.append((future, None, exc))
                    else:
                        if not single:
                            tx.defer("RELEASE grouped")
                        outcomes.append((future, result, None))
        except Exception as exc:
            failed = {id(f) for f, _, e in outcomes if e is not None}
            for _, future, _ in batch:
                if not future.done():
                    own = next((e for f, _, e in outcomes if f is future and e), None)
                    future.set_exception(own if id(future) in failed and own else exc)
            return
        for future, result, error in outcomes:
            _answer(future, result, error)

    async def notify(self, payload: str) -> None:
        return None
