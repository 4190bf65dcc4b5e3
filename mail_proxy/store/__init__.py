"""Storage: the only package that knows a database driver exists.

``open_store(url)`` returns a :class:`~mail_proxy.store.base.Store` for ``sqlite://`` or
``postgresql://`` URLs. Callers name queries (``"claim_account"``) whose SQL lives in
``sql/<backend>/queries/*.sql``; they never write SQL themselves.
"""

from __future__ import annotations

import re

from mail_proxy.store.base import Store, Transaction
from mail_proxy.store.errors import RowsMissing, StoreUnavailable, UniqueViolation

_QUERY_PASSWORD = re.compile(r"(?i)(?<=[?&])(?:ssl)?password=[^&#]*&?")


def backend_of(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if url.startswith("sqlite://") or url.startswith("/"):
        return "sqlite"
    raise ValueError(f"unsupported database URL {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """The URL without its password, safe to print, even a URL that does not parse: what lies
    between '://' and the last '@' is dropped but the user name, and so are ``password`` and
    ``sslpassword`` query parameters."""
    url = _QUERY_PASSWORD.sub("", url).rstrip("?&")
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


def sqlite_path(url: str) -> str:
    return url[len("sqlite://"):] if url.startswith("sqlite://") else url


def open_store(url: str, *, pool_size: int = 10, password: str | None = None) -> Store:
    """Build (not yet connect) the store for ``url``; call ``await store.open()``."""
    if backend_of(url) == "postgresql":
        from mail_proxy.store.postgres import PostgresStore  # lazy: asyncpg is an extra

        return PostgresStore(url, pool_size=pool_size, password=password)
    from mail_proxy.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url))


__all__ = ["RowsMissing", "Store", "StoreUnavailable", "Transaction", "UniqueViolation",
           "backend_of", "open_store", "redact_url", "sqlite_path"]
