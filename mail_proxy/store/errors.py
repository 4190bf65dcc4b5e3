"""Driver errors translated at the store boundary, so callers never import a driver."""

from __future__ import annotations

from typing import Any

from mail_proxy.errors import StorageError


class StoreUnavailable(StorageError):
    """The database could not be reached or refused the write (disk full, locked, down)."""


class StoreUnreachable(StoreUnavailable):
    """The database server could not be reached at all (down, starting up, refusing
    connections, out of connection slots): waiting for it is the remedy, unlike a refused
    login or a database that does not exist."""


class SchemaLost(StoreUnavailable):
    """The database answers but mail-proxy's tables are gone (dropped, or the database
    created anew under the same name): the worker exits so that its supervisor starts it
    again, which applies the migrations as a first start does."""


class StoreBusy(StoreUnavailable):
    """A lock wait timed out: the database answers, but a row this write needs is held by
    a transaction that is taking long (another write may well go through)."""


class UniqueViolation(StorageError):
    """Another writer inserted the same key since this transaction looked. The driver's
    text (constraint names, the key) goes to ``driver_text``, not to clients."""

    code = "conflict"
    status = 409

    def __init__(self, driver_text: str) -> None:
        super().__init__("another request wrote the same record at the same moment; "
                         "repeat the request")
        self.driver_text = driver_text


class RowsMissing(Exception):
    """A guarded insert's guard query returned rows: what the insert depends on is gone
    (deleted by a concurrent transaction), and nothing was written.

    Not a StorageError: the caller turns it into its own answer, and one that escapes is a
    bug.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(rows)} row(s) the insert depends on are missing")
        self.rows = rows
