"""A lock held by a stuck session does not stop a PostgreSQL worker for good: lock waits end
after ``lock_timeout`` as "database unavailable", and a session idle in the middle of its
transaction is ended after ``idle_in_transaction_session_timeout``, which releases its locks.
Both default to 60 s; the database URL can set either."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from mail_proxy.manager import tenants
from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.security.crypto import KeyRing
from mail_proxy.store.errors import StoreUnavailable
from tests.support import factories as f

pytestmark = pytest.mark.timeout(30)


async def test_sessions_get_both_timeouts_by_default(pg_url: str, keyring: KeyRing) -> None:
    core = await Core.open(pg_url, keyring, name="test")
    try:
        async with core.store._pool.acquire() as conn:
            assert await conn.fetchval("SHOW lock_timeout") == "30s"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
    finally:
        await core.close()


async def test_a_lock_wait_ends_as_unavailable(pg_url: str, keyring: KeyRing) -> None:
    core = await Core.open(pg_url + "&lock_timeout=300ms", keyring, name="test")
    other = await asyncpg.connect(pg_url.split("?")[0],
                                  server_settings={"search_path": pg_url.split("schema=")[1]})
    try:
        async with core.store._pool.acquire() as conn:  # the URL's value wins over the default
            assert await conn.fetchval("SHOW lock_timeout") == "300ms"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
        await f.tenant(core)
        stuck = other.transaction()
        await stuck.start()
        await other.execute("SELECT 1 FROM tenants WHERE id = 'acme' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            await tenants.patch_tenant(core, "acme", {"name": "renamed"}, ADMIN)
        assert time.monotonic() - started < 5
        await stuck.rollback()
        await tenants.patch_tenant(core, "acme", {"name": "renamed"}, ADMIN)
    finally:
        await other.close()
        await core.close()


async def test_a_stuck_transaction_is_ended_and_its_locks_released(
        pg_url: str, keyring: KeyRing) -> None:
    stuck_core = await Core.open(pg_url + "&idle_in_transaction_session_timeout=300ms",
                                 keyring, name="test")
    core = await Core.open(pg_url, keyring, name="test")
    try:
        await f.tenant(core)
        locked = asyncio.Event()

        async def frozen() -> None:
            async with stuck_core.store.transaction() as tx:
                assert await tx.fetch_one("tenant_lock", id="acme") is not None
                locked.set()
                # a worker frozen here (SIGSTOP, a paused VM) holds the tenant row
                await asyncio.sleep(4)
                await tx.fetch_one("tenant_lock", id="acme")

        stuck = asyncio.create_task(frozen())
        await locked.wait()
        # the row is free again while the stuck session's owner still sleeps
        await asyncio.wait_for(
            tenants.patch_tenant(core, "acme", {"name": "renamed"}, ADMIN), timeout=2.5)
        assert not stuck.done()
        assert (await tenants.get_tenant(core, "acme"))["name"] == "renamed"
        with pytest.raises(StoreUnavailable):
            await stuck
    finally:
        await stuck_core.close()
        await core.close()


async def test_a_locked_tenant_holds_back_only_its_own_outcomes(pg_url: str,
                                                                keyring: KeyRing) -> None:
    """Outcomes are written in batches; one tenant's row locked elsewhere (a long tenant
    delete, an open psql transaction) made every batch wait for the lock timeout and fail,
    so other tenants' delivered messages stayed `sending` with no report (verification
    pass: up to 60 s at a time, for as long as the lock was held)."""
    from tests.integration.test_engine_audit_helpers import make, settle
    from tests.support.smtp_server import RecordingSmtpServer

    core = await Core.open(pg_url + "&lock_timeout=300ms", keyring, name="test")
    other = await asyncpg.connect(pg_url.split("?")[0],
                                  server_settings={"search_path": pg_url.split("schema=")[1]})
    try:
        async with RecordingSmtpServer() as smtp:
            for tenant in ("locked", "free"):
                await f.tenant(core, tenant)
                await f.account(core, smtp.port, tenant_id=tenant)
                await f.enqueue(core, *[f.message(f"{tenant}-{i}") for i in range(5)],
                                tenant_id=tenant)
            stuck = other.transaction()
            await stuck.start()
            await other.execute("SELECT 1 FROM tenants WHERE id = 'locked' FOR UPDATE")
            d = make(core)
            try:
                await d.run_once()
                for _ in range(100):  # the free tenant's outcomes commit meanwhile
                    rows = await other.fetch("SELECT status FROM messages "
                                             "WHERE tenant_id = 'free'")
                    if all(r["status"] == "sent" for r in rows):
                        break
                    await asyncio.sleep(0.05)
                assert [r["status"] for r in rows] == ["sent"] * 5
                locked = await other.fetch("SELECT status FROM messages "
                                           "WHERE tenant_id = 'locked'")
                assert {r["status"] for r in locked} == {"sending"}
                await stuck.rollback()
                await settle(d, timeout=20)
            finally:
                await d.smtp.close()
            rows = await other.fetch("SELECT status FROM messages WHERE tenant_id = 'locked'")
            assert [r["status"] for r in rows] == ["sent"] * 5
            assert len(smtp.messages) == 10
    finally:
        await other.close()
        await core.close()


async def test_a_database_refusing_new_connections_is_unavailable(keyring: KeyRing) -> None:
    """`ALTER DATABASE ... ALLOW_CONNECTIONS false` (or a renamed database, a refused login)
    fails the pool's reconnect with an error that is not a connection error: it must read
    as "unavailable" (retried), not as a bug (an outcome was dropped and the message sent
    again)."""
    from mail_proxy.store.postgres import PostgresStore
    from tests.store import pg

    if not await pg.reachable():
        pytest.skip(f"no PostgreSQL server at {pg.BASE_URL}")
    name = pg.new_schema_name("conn")
    admin = await asyncpg.connect(pg.BASE_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    store = PostgresStore(pg.BASE_URL.rsplit("/", 1)[0] + f"/{name}", pool_size=2)
    try:
        await store.open()
        assert await store.schema_version() >= 1
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1", name)
        for _ in range(3):  # the first may meet the terminated connection, the rest reconnect
            with pytest.raises(StoreUnavailable):
                await store.fetch_value("next_due_at")
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await store.fetch_value("next_due_at")  # back once the database accepts again
    finally:
        await store.close()
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
