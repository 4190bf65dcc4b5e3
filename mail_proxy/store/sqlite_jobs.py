"""Work that the SQLite writer's thread runs for grouped callers, in one hand-off.

Concurrent enqueues are grouped into one transaction (one commit, one fsync). Each hand-off
to the database thread, and each statement on it, costs that thread a wait for the
interpreter lock while the event loop is busy, so a group is run as a single function on
the thread, and a group of enqueues as one multi-row INSERT when nothing conflicts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from mail_proxy.store.base import Guard
from mail_proxy.store.errors import RowsMissing, StoreUnavailable, UniqueViolation
from mail_proxy.store.sqlite_statements import MultiRow, bind_values, multi_row

Job = Callable[[sqlite3.Connection], Any]
Outcome = tuple[Any, BaseException | None]  # a job's result, or its own error


def translate(exc: sqlite3.Error) -> Exception:
    """A driver error as the store's: unique conflicts and other constraint errors belong
    to the caller; anything else means the database itself is failing."""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return UniqueViolation(str(exc))
    if isinstance(exc, sqlite3.IntegrityError):
        return exc
    return StoreUnavailable(f"database error: {exc}")


def undo_savepoint(raw: sqlite3.Connection, name: str) -> None:
    """Roll back and drop a savepoint after an error; the error itself is what counts, so a
    failure here (SQLite may already have rolled the whole transaction back) is ignored."""
    try:
        raw.execute(f"ROLLBACK TO {name}")
        raw.execute(f"RELEASE {name}")
    except sqlite3.Error:
        pass


class InsertAll:
    """Insert every row or none (False on a unique conflict, nothing written), then run
    ``then`` once: an enqueue's messages and its command-log row. A ``guard`` that returns
    rows vetoes the insert (RowsMissing): the enqueue's accounts are checked on the writer,
    in the transaction that stores the messages, so a delete cannot slip in between.

    It undoes its own writes when it fails, so a group runs it without a savepoint of its
    own; several of them with the same statements run as one (:func:`run_isolated`).
    """

    def __init__(self, queries: dict[str, str], query: str, rows: list[dict[str, Any]],
                 then: str | None, then_params: dict[str, Any] | None,
                 guard: Guard | None = None) -> None:
        self.sql = queries[query]
        self.values = [bind_values(r) for r in rows]
        self.multi = multi_row(self.sql)
        self.then_sql = queries[then] if then is not None else None
        self.then_values = bind_values(then_params or {})
        self.guard = None if guard is None else (queries[guard[0]], bind_values(guard[1]))

    def guard_key(self) -> tuple[Any, ...] | None:
        """Equal for two jobs whose guards are the same query on the same values (concurrent
        enqueues for one account): a group runs it once."""
        if self.guard is None:
            return None
        sql, values = self.guard
        return (sql, *sorted(values.items()))

    def require(self, raw: sqlite3.Connection) -> None:
        if self.guard is None:
            return
        missing = raw.execute(*self.guard).fetchall()
        if missing:
            raise RowsMissing([dict(r) for r in missing])

    def __call__(self, raw: sqlite3.Connection) -> bool:
        self.require(raw)
        raw.execute("SAVEPOINT insert_all")
        try:
            try:
                self._insert(raw, self.values)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                fresh = False  # some rows were inserted before the conflict: undone below
            else:
                fresh = True
                if self.then_sql is not None:
                    raw.execute(self.then_sql, self.then_values).close()
        except BaseException:
            undo_savepoint(raw, "insert_all")
            raise
        if not fresh:
            raw.execute("ROLLBACK TO insert_all")
        raw.execute("RELEASE insert_all")
        return fresh

    def _insert(self, raw: sqlite3.Connection, values: list[dict[str, Any]]) -> None:
        if values and self.multi is not None:
            self.multi.run(raw, values)
        elif values:
            raw.executemany(self.sql, values).close()

    def same_statements(self, other: InsertAll) -> bool:
        return other.sql == self.sql and other.then_sql == self.then_sql


def _together(raw: sqlite3.Connection, jobs: list[InsertAll]) -> list[Outcome] | None:
    """Every job's rows in one multi-row INSERT and every ``then`` in another: two
    statements for the whole group instead of five per job. None, with nothing written,
    when any row conflicts or breaks a constraint, or any guard fails: the caller then runs
    them one by one, so that only the job at fault fails."""
    if not _guards_pass(raw, jobs):
        return None
    first = jobs[0]
    raw.execute("SAVEPOINT together")
    try:
        first._insert(raw, [v for job in jobs for v in job.values])
        if first.then_sql is not None:
            thens = [job.then_values for job in jobs]
            then_multi: MultiRow | None = multi_row(first.then_sql)
            if then_multi is not None:
                then_multi.run(raw, thens)
            else:
                raw.executemany(first.then_sql, thens).close()
    except sqlite3.IntegrityError:
        undo_savepoint(raw, "together")
        return None
    except BaseException:
        undo_savepoint(raw, "together")
        raise
    raw.execute("RELEASE together")
    return [(True, None)] * len(jobs)


def _guards_pass(raw: sqlite3.Connection, jobs: list[InsertAll]) -> bool:
    """Every job's guard, each distinct one once (nothing is written yet)."""
    checked: set[tuple[Any, ...] | None] = {None}
    for job in jobs:
        key = job.guard_key()
        if key in checked:
            continue
        try:
            job.require(raw)
        except RowsMissing:
            return False
        checked.add(key)
    return True


def run_isolated(raw: sqlite3.Connection, jobs: list[Job]) -> list[Outcome]:
    """Each job as if alone, inside the caller's transaction: a job's own error (a
    constraint, a bug) undoes only that job; the database failing (full, I/O, locked)
    raises and fails them all, as in ``SqliteStore.grouped``."""
    if len(jobs) == 1:
        return [(jobs[0](raw), None)]
    inserts = [job for job in jobs if isinstance(job, InsertAll)]
    if len(inserts) == len(jobs) and all(j.same_statements(inserts[0]) for j in inserts):
        together = _together(raw, inserts)
        if together is not None:
            return together
    out: list[Outcome] = []
    for job in jobs:
        isolated = isinstance(job, InsertAll)  # no savepoint needed around it
        if not isolated:
            raw.execute("SAVEPOINT grouped")
        try:
            result = job(raw)
        except Exception as exc:
            error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
            if isinstance(error, StoreUnavailable):
                raise
            if not isolated:
                undo_savepoint(raw, "grouped")
            out.append((None, error))
        else:
            if not isolated:
                raw.execute("RELEASE grouped")
            out.append((result, None))
    return out
