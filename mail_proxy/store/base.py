"""The small Store interface that the manager layer talks to.

Queries are addressed by name; parameters are keyword arguments matching ``:name``
placeholders. Python ``list`` and ``dict`` values are passed as JSON text on SQLite and as
native arrays/JSON text on PostgreSQL, so that the same call works on both backends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from mail_proxy.store.errors import RowsMissing

Row = dict[str, Any]
T = TypeVar("T")


# query, its parameters, and what to run when it changed a row (None: nothing)
Step = tuple[str, dict[str, Any], str | None, dict[str, Any] | None]
# A query and its parameters, run in an insert's transaction before it: any row it returns
# names something the insert depends on that is gone, and vetoes the insert (RowsMissing).
Guard = tuple[str, dict[str, Any]]


class Transaction(Protocol):
    async def fetch(self, query: str, **params: Any) -> list[Row]: ...
    async def fetch_one(self, query: str, **params: Any) -> Row | None: ...
    async def fetch_value(self, query: str, **params: Any) -> Any: ...
    async def execute(self, query: str, **params: Any) -> int:
        """Run a statement and return the number of rows it changed."""
        ...

    async def executemany(self, query: str, rows: list[dict[str, Any]]) -> None: ...

    async def execute_then_many(self, steps: list[Step]) -> list[int]:
        """Each step's query, and its ``then`` when the query changed a row, in order;
        returns the queries' counts (the outcome recorder: status update, then event)."""
        ...

    async def insert_all(self, query: str, rows: list[dict[str, Any]], then: str | None = None,
                         then_params: dict[str, Any] | None = None, guard: Guard | None = None
                         ) -> bool:
        """Every row or none (False on a unique conflict, nothing written); then ``then``.
        With ``guard``, nothing is written either when it returns rows (RowsMissing)."""
        ...


class Store(Protocol):
    backend: str  # "sqlite" | "postgresql"

    async def open(self) -> None:
        """Connect and apply pending migrations (serialised across processes)."""
        ...

    async def close(self) -> None: ...

    async def fetch(self, query: str, **params: Any) -> list[Row]: ...
    async def fetch_one(self, query: str, **params: Any) -> Row | None: ...
    async def fetch_value(self, query: str, **params: Any) -> Any: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction (SQLite: BEGIN IMMEDIATE on the single writer)."""
        ...

    async def grouped(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction shared with other concurrent callers.

        Concurrent callers share one commit (and one fsync); each runs under its own
        savepoint so that one failing caller does not undo the others. Returns only after
        the shared commit succeeded.
        """
        ...

    async def grouped_insert(self, query: str, rows: list[dict[str, Any]],
                             then: str | None = None,
                             then_params: dict[str, Any] | None = None,
                             guard: Guard | None = None) -> bool:
        """:meth:`Transaction.insert_all` as a :meth:`grouped` caller: every row or none
        (False on a unique conflict, nothing written), then ``then``; committed before
        returning. SQLite runs a whole group of these in one hand-off to its thread.

        ``guard`` runs first, in the same transaction; when it returns rows nothing is
        written and :class:`~mail_proxy.store.errors.RowsMissing` carries them. What it
        found must still be there at the commit: SQLite's single writer sees to that, on
        PostgreSQL the guard's SQL locks it (``FOR KEY SHARE``)."""
        ...

    async def apply_steps(self, steps: list[Step]) -> list[int]:
        """Steps as :meth:`Transaction.execute_then_many`, in a transaction of their own,
        committed before returning.

        For a caller that batches its own writes (the outcome recorder): SQLite runs the
        BEGIN, the steps and the COMMIT in one hand-off to its database thread.
        """
        ...

    async def apply_fetches(self, calls: list[tuple[str, dict[str, Any]]]) -> list[list[Row]]:
        """Run each (query, params) in one transaction of their own, committed before
        returning; their rows in order (the dispatcher's claims: UPDATE ... RETURNING)."""
        ...

    async def notify(self, payload: str) -> None:
        """Wake dispatchers in other processes (PostgreSQL NOTIFY; no-op on SQLite)."""
        ...

    async def schema_version(self) -> int: ...


async def check_guard(tx: Transaction, guard: Guard) -> None:
    """Run ``guard`` in ``tx``; RowsMissing with its rows when it returns any."""
    query, params = guard
    missing = await tx.fetch(query, **params)
    if missing:
        raise RowsMissing(missing)
