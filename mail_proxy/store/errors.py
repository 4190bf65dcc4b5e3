"""Driver errors translated at the store boundary, so callers never import a driver."""

from __future__ import annotations

from mail_proxy.errors import StorageError


class StoreUnavailable(StorageError):
    """The database could not be reached or refused the write (disk full, locked, down)."""


class UniqueViolation(StorageError):
    code = "conflict"
    status = 409
