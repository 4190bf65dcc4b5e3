"""PostgreSQL backend: an asyncpg pool shared by any number of workers (data.md §5).

Named queries use ``:name`` placeholders like the SQLite ones, rewritten to ``$1..$n`` at
load time. Parameters are coerced from the types PostgreSQL inferred for them (asked once
per query and process), so callers pass the same Python values as on SQLite: 0/1 for
booleans, lists for arrays, lists and dicts for JSON text. A URL with ``?schema=name`` (or
``options=-csearch_path=name``) makes every connection use that schema, created if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from mail_proxy.errors import SchemaTooNew
from mail_proxy.store import queries as named
from mail_proxy.store.base import Guard, Step, check_guard
from mail_proxy.store.errors import (
    SchemaLost,
    StoreBusy,
    StoreUnavailable,
    StoreUnreachable,
    UniqueViolation,
)
from mail_proxy.store.postgres_statements import coerce, convert, unnest_insert

T = TypeVar("T")
log = logging.getLogger("mail_proxy.store")
NOTIFY_MAX_BYTES = 8000  # PostgreSQL refuses a NOTIFY payload of this size or more
CHANNEL = "mail_proxy_wake"
# Fixed key of pg_advisory_lock: serialises concurrent migrations of every worker (data.md §3).
MIGRATION_LOCK = 0x6D61696C  # "mail"
LISTEN_HEALTH_INTERVAL = 30.0
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Without them a lock held by a stuck session (a frozen worker in the middle of a
# transaction, an operator's open psql transaction) stops every worker, silently and for
# good: with them the waiting statement fails as "unavailable" (503, the message given
# back) and the stuck session is ended, which releases its locks. Any of them can be set
# in the database URL instead (``?lock_timeout=5s``); docs/postgresql.md.
CONNECT_TIMEOUT = 10.0
SESSION_DEFAULTS = {"lock_timeout": "30s", "idle_in_transaction_session_timeout": "60s"}
# Errors that say "the database is not usable right now", as opposed to a bug in a query.
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.InsufficientResourcesError,  # disk full, OOM
                asyncpg.OperatorInterventionError, asyncpg.CannotConnectNowError,
                asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                asyncpg.ReadOnlySQLTransactionError, asyncpg.QueryCanceledError,
                asyncpg.LockNotAvailableError, asyncpg.IdleInTransactionSessionTimeoutError,
                # a connection ended by the server mid-operation (restart, failover, a proxy,
                # pg_terminate_backend) can surface as "cannot switch to state N; another
                # operation is in progress" instead of a connection error
                asyncpg.exceptions.InternalClientError)

# Failures to open that waiting cures: no server listening (yet), a timeout, a server
# starting up or shutting down, no connection slot free. A refused login or a missing
# database is not among them, nor a TLS failure (an OSError too): those need the operator.
# ObjectNotInPrerequisiteStateError: 'database "x" is not currently accepting connections'
# (ALTER DATABASE ... ALLOW_CONNECTIONS false, a maintenance window) and, its subclass, a
# lock the migration could not get: both pass (PostgreSQL hunt: a worker restarted during
# such an outage ended FATAL while the running ones rode it out).
_UNREACHABLE = (OSError, TimeoutError, asyncpg.CannotConnectNowError,
                asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
                asyncpg.CrashShutdownError, asyncpg.ConnectionDoesNotExistError,
                asyncpg.ObjectNotInPrerequisiteStateError)


def parse_url(url: str) -> tuple[str, str | None]:
    """(DSN for asyncpg, schema or None): ``schema``/``options`` leave the query string."""
    parts = urlsplit(url)
    schema = None
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        elif key == "options" and "search_path=" in value:
            schema = value.split("search_path=", 1)[1].split()[0].split(",")[0]
        else:
            kept.append((key, value))
    if schema is not None and not _IDENT.match(schema):
        raise ValueError(f"invalid schema name {schema!r} in the database URL")
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), "")), schema


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    if isinstance(exc, asyncpg.UndefinedTableError):
        # not a bug of ours: the schema was dropped under the running worker (PostgreSQL
        # hunt: every request answered 500 until something migrated the database again)
        return SchemaLost(f"the database has lost mail-proxy's tables: {exc}")
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return StoreBusy(f"database error: {type(exc).__name__}: {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"database error: {type(exc).__name__}: {exc}")
    return exc


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _Conn:
    """Named queries over one connection (a pooled one, or one inside a transaction)."""

    def __init__(self, store: PostgresStore, conn: Any) -> None:
        self._store = store
        self._conn = conn

    async def _args(self, query: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
        sql, names, kinds = await self._store.prepared(self._conn, query)
        try:
            return sql, [coerce(params[n], k) for n, k in zip(names, kinds, strict=True)]
        except KeyError as exc:
            raise TypeError(f"query {query!r} needs parameter {exc.args[0]!r}") from None

    async def fetch(self, query: str, **params: Any) -> list[dict[str, Any]]:
        try:
            sql, args = await self._args(query, params)
            rows = await self._conn.fetch(sql, *args)
        except Exception as exc:
            raise _translate(exc) from exc
        return [dict(r) for r in rows]

    async def fetch_one(self, query: str, **params: Any) -> dict[str, Any] | None:
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None

    async def fetch_value(self, query: str, **params: Any) -> Any:
        row = await self.fetch_one(query, **params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: str, **params: Any) -> int:
        try:
            sql, args = await self._args(query, params)
            return _rowcount(await self._conn.execute(sql, *args))
        except Exception as exc:
            raise _translate(exc) from exc

    async def execute_then_many(self, steps: list[Step]) -> list[int]:
        """Each step's query; its ``then`` (may be None) when the query changed a row."""
        counts = []
        for query, params, then, then_params in steps:
            count = await self.execute(query, **params)
            if count and then is not None:
                await self.execute(then, **(then_params or {}))
            counts.append(count)
        return counts

    async def executemany(self, query: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            sql, names, kinds = await self._store.prepared(self._conn, query)
            bulk = self._store.unnest_form(query, sql, kinds) if len(rows) > 1 else None
            if bulk is not None:
                await self._conn.execute(bulk, *[[coerce(r[n], k) for r in rows]
                                                 for n, k in zip(names, kinds, strict=True)])
            else:
                await self._conn.executemany(sql, [[coerce(r[n], k) for n, k in zip(
                    names, kinds, strict=True)] for r in rows])
        except Exception as exc:
            raise _translate(exc) from exc

    async def insert_all(self, query: str, rows: list[dict[str, Any]],
                         then: str | None = None,
                         then_params: dict[str, Any] | None = None,
                         guard: Guard | None = None) -> bool:
        """Insert every row, or none of them: False, with nothing written, when one row
        breaks a unique constraint; otherwise run ``then`` too and return True. A
        ``guard`` returning rows raises RowsMissing before anything is written; the rows
        it read stay locked until the commit (its SQL says how).

        Under a savepoint, so a conflict leaves the surrounding transaction usable. Enqueue
        uses it to skip reading which ids exist in the common case (all new).
        """
        savepoint = self._conn.transaction()
        await savepoint.start()
        try:
            await self.insert_then(query, rows, then, then_params, guard)
        except UniqueViolation:
            await savepoint.rollback()
            return False
        except BaseException:
            with contextlib.suppress(Exception):
                await savepoint.rollback()
            raise
        await savepoint.commit()
        return True

    async def insert_then(self, query: str, rows: list[dict[str, Any]], then: str | None,
                          then_params: dict[str, Any] | None, guard: Guard | None) -> None:
        """The guard, the rows, then ``then``; a unique conflict raises, leaving the rest of
        the transaction to the caller."""
        if guard is not None:
            await check_guard(self, guard)
        await self.executemany(query, rows)
        if then is not None:
            await self.execute(then, **(then_params or {}))


class PostgresStore:
    backend = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10, password: str | None = None) -> None:
        self.dsn, self.schema = parse_url(url)
        self.pool_size = max(int(pool_size), 2)
        self._password = password  # None: the URL's own, else PGPASSWORD (read by asyncpg)
        self._queries = {name: convert(sql) for name, sql in named.load("postgresql").items()}
        self._kinds: dict[str, list[tuple[str, str]]] = {}
        self._unnest: dict[str, str | None] = {}
        self._pool: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._listen_conn: Any = None

    def _connect_kwargs(self) -> dict[str, Any]:
        # asyncpg waits 60 s for a server that accepts the connection and never answers;
        # a start or a CLI command waited that long and then said only "TimeoutError" (CLI
        # hunt).
        kwargs: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
        if self._password is not None:
            kwargs["password"] = self._password
        # asyncpg passes the URL's other query parameters as server settings too, but lets
        # these win: a default the URL names is left to the URL
        named_in_url = {key for key, _ in parse_qsl(urlsplit(self.dsn).query)}
        settings = {k: v for k, v in SESSION_DEFAULTS.items() if k not in named_in_url}
        if self.schema is not None:
            settings["search_path"] = self.schema
        kwargs["server_settings"] = settings
        return kwargs

    async def open(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, **self._connect_kwargs())
            try:
                await self._migrate(conn)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size,
                                                   **self._connect_kwargs())
        except Exception as exc:
            await self.close()
            if isinstance(exc, SchemaTooNew):
                raise
            error = _translate(exc)
            if isinstance(exc, TimeoutError):
                where = urlsplit(self.dsn)
                error = StoreUnavailable(f"no answer from {where.hostname}:{where.port or 5432} "
                                         f"within {CONNECT_TIMEOUT:g} s")
            if isinstance(exc, _UNREACHABLE) and not isinstance(exc, ssl.SSLError):
                raise StoreUnreachable(f"cannot open PostgreSQL database: {error}") from exc
            if isinstance(error, StoreUnavailable) or isinstance(exc, asyncpg.PostgresError):
                raise StoreUnavailable(f"cannot open PostgreSQL database: {error}") from exc
            raise

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, Exception):
                pool.terminate()

    async def _migrate(self, conn: Any) -> None:
        known = named.migrations("postgresql")
        latest = known[-1][0] if known else 0
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            if self.schema is not None:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT"
                               " PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
            applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if applied and max(applied) > latest:
                raise SchemaTooNew(f"database schema {max(applied)} is newer than this "
                                   f"mail-proxy ({latest})")
            for version, name, sql in known:
                if version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                                       version, name, int(time.time()))
                log.info("applied PostgreSQL migration %04d_%s", version, name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def prepared(self, conn: Any, query: str) -> tuple[str, list[str], list[tuple[str, str]]]:
        """(SQL, parameter names, parameter types) of a named query; types asked once."""
        sql, names = self._queries[query]
        kinds = self._kinds.get(query)
        if kinds is None:
            stmt = await conn.prepare(sql)
            kinds = [(t.name, t.kind) for t in stmt.get_parameters()]
            self._kinds[query] = kinds
        return sql, names, kinds

    def unnest_form(self, query: str, sql: str, kinds: list[tuple[str, str]]) -> str | None:
        """:func:`unnest_insert` of a named query, worked out once."""
        if query not in self._unnest:
            self._unnest[query] = unnest_insert(sql, kinds)
        return self._unnest[query]

    def _require_pool(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection whose release cannot fail the work done on it.

        Giving a connection back resets it; when the server has just dropped it, the reset
        raises. asyncpg has then already discarded it, and whatever ran on it (a COMMIT
        included) stands: an add-messages whose commit succeeded was answered 500, and an
        outcome already written was written again after a "failure"."""
        pool = self._require_pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            # Whatever stops a connection from opening (the database refusing connections,
            # renamed, a login refused after a password change) means "unavailable", never
            # a bug in a query: an outcome being recorded is retried, not dropped (QA hunt:
            # ALLOW_CONNECTIONS false made 28 of 28 delivered messages go out twice).
            error = _translate(exc)
            if not isinstance(error, StoreUnavailable):
                error = StoreUnavailable(f"cannot connect to the database: "
                                         f"{type(exc).__name__}: {exc}")
            raise error from exc
        try:
            yield conn
        finally:
            try:
                await pool.release(conn)
            except Exception as exc:  # the connection is gone; the pool makes a new one
                log.info("a database connection was lost on release (%s: %s)",
                         type(exc).__name__, exc)

    # reads -------------------------------------------------------------------------------
    async def _read(self, method: str, query: str, params: dict[str, Any]) -> Any:
        try:
            async with self._connection() as conn:
                return await getattr(_Conn(self, conn), method)(query, **params)
        except Exception as exc:
            raise _translate(exc) from exc

    async def fetch(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return await self._read("fetch", query, params)

    async def fetch_one(self, query: str, **params: Any) -> dict[str, Any] | None:
        return await self._read("fetch_one", query, params)

    async def fetch_value(self, query: str, **params: Any) -> Any:
        return await self._read("fetch_value", query, params)

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0)

    # writes ------------------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        try:
            async with self._connection() as conn, conn.transaction():
                yield _Conn(self, conn)
        except Exception as exc:
            raise _translate(exc) from exc

    async def grouped(self, work: Callable[[Any], Awaitable[T]]) -> T:
        # No single writer to relieve here: each caller commits on its own connection,
        # and returns only after that commit.
        async with self.transaction() as tx:
            return await work(tx)

    async def grouped_insert(self, query: str, rows: list[dict[str, Any]],
                             then: str | None = None,
                             then_params: dict[str, Any] | None = None,
                             guard: Guard | None = None) -> bool:
        # The transaction is this caller's alone: a conflict rolls all of it back, so
        # insert_all's savepoint (two round trips) is not needed; that pays for the guard's.
        try:
            async with self.transaction() as tx:
                await tx.insert_then(query, rows, then, then_params, guard)
        except UniqueViolation:
            return False
        return True

    async def apply_steps(self, steps: list[Step]) -> list[int]:
        # in pk order, as lease renewals lock rows: two orders over the same rows deadlock
        order = sorted(range(len(steps)), key=lambda i: steps[i][1].get("pk") or 0)
        async with self.transaction() as tx:
            counts = await tx.execute_then_many([steps[i] for i in order])
        return [count for _, count in sorted(zip(order, counts, strict=True))]

    async def apply_fetches(self, calls: list[tuple[str, dict[str, Any]]]
                            ) -> list[list[dict[str, Any]]]:
        async with self.transaction() as tx:
            return [await tx.fetch(query, **params) for query, params in calls]

    async def notify(self, payload: str) -> None:
        """Best effort, after a commit: the answer must not turn into an error for a write
        that is already durable (a 500 made clients resend batches that had been stored),
        and listeners poll anyway. A payload past PostgreSQL's 8000-byte limit (a batch
        naming a hundred tenants with long ids) is sent empty: "wake up for everyone"."""
        if len(payload.encode("utf-8")) >= NOTIFY_MAX_BYTES:
            payload = ""
        try:
            async with self._connection() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except Exception as exc:
            log.warning("NOTIFY failed (%s); other workers find the new messages at their "
                        "next cycle", _translate(exc))

    # LISTEN ------------------------------------------------------------------------------
    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` on every NOTIFY, on a dedicated connection.

        Returns once the first connection attempt is over; the connection is re-established
        after a loss (1 s doubling to 30 s), and ``callback("")`` then runs once because
        notifications sent meanwhile are lost.
        """
        if self._listener is not None:
            raise RuntimeError("already listening")
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen_loop(callback, first),
                                             name="pg-listen")
        await asyncio.wait([first, self._listener], return_when=asyncio.FIRST_COMPLETED)

    async def _listen_loop(self, callback: Callable[[str], None],
                           first: asyncio.Future[None]) -> None:
        backoff = 1.0
        connected_before = False
        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, **self._connect_kwargs())
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: callback(payload))
                self._listen_conn = conn
                backoff = 1.0
                if connected_before:
                    log.info("LISTEN %s re-established", CHANNEL)
                    callback("")
                connected_before = True
                if not first.done():
                    first.set_result(None)
                await self._watch(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN %s connection lost (%s); reconnecting in %.0f s",
                            CHANNEL, type(exc).__name__, backoff)
            finally:
                self._listen_conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            if not first.done():
                first.set_result(None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _watch(self, conn: Any, lost: asyncio.Event) -> None:
        """Return when the listening connection dies (closed, or silent for too long)."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=LISTEN_HEALTH_INTERVAL)
                break
            await conn.fetchval("SELECT 1", timeout=10)
        raise ConnectionError("listening connection closed")


def password_from_url(url: str) -> str | None:
    """The password embedded in a URL, if any (the CLI moves it to ``db_password``)."""
    password = urlsplit(url).password
    return unquote(password) if password is not None else None
