"""PostgreSQL-only behaviour: serialised migrations, refusing a newer schema, LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from mail_proxy.errors import SchemaTooNew
from mail_proxy.store import open_store
from mail_proxy.store.errors import StoreUnavailable
from mail_proxy.store.postgres import PostgresStore, parse_url


async def test_concurrent_starts_migrate_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, pool_size=2) for _ in range(4)]
    await asyncio.gather(*[s.open() for s in stores])
    try:
        assert {await s.schema_version() for s in stores} == {1}
        dsn, schema = parse_url(pg_url)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
            assert await conn.fetchval("SELECT count(*) FROM instance") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.gather(*[s.close() for s in stores])


async def test_newer_schema_is_refused(pg_url: str) -> None:
    store = open_store(pg_url)
    await store.open()
    await store.close()
    dsn, schema = parse_url(pg_url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    await conn.execute("INSERT INTO schema_migrations VALUES (7, 'future', 0)")
    await conn.close()
    with pytest.raises(SchemaTooNew, match="database schema 7 is newer than this mail-proxy"):
        await PostgresStore(pg_url).open()


async def test_unreachable_server_is_unavailable_and_hides_the_password() -> None:
    store = PostgresStore("postgresql://u:s3cret@127.0.0.1:1/db")
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert "s3cret" not in str(info.value)


async def test_a_database_closed_to_connections_is_unreachable(pg_url: str) -> None:
    """PostgreSQL hunt: 'database ... is not currently accepting connections' (ALTER
    DATABASE ... ALLOW_CONNECTIONS false) made a starting worker crash (exit 1, FATAL after
    five) instead of exit 75, which its supervisor waits out."""
    import secrets as random_names
    from urllib.parse import urlsplit, urlunsplit

    from mail_proxy.store.errors import StoreUnreachable

    name = "mp_closed_" + random_names.token_hex(4)
    admin = await asyncpg.connect(pg_url.split("?")[0])
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        parts = urlsplit(pg_url.split("?")[0])
        store = PostgresStore(urlunsplit(parts._replace(path=f"/{name}")))
        with pytest.raises(StoreUnreachable, match="not currently accepting connections"):
            await store.open()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()


async def test_a_server_that_never_answers_is_given_up_on_with_its_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI hunt: asyncpg's 60 s default, then "TimeoutError: " and nothing else."""
    import socket

    from mail_proxy.store import postgres
    from mail_proxy.store.errors import StoreUnreachable

    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 0.3)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x")
        with pytest.raises(StoreUnreachable,
                           match=f"no answer from 127.0.0.1:{port} within 0.3 s"):
            await store.open()


class Wakes:
    """What a listening store received: its payloads, and an event set on each."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.arrived = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.got.append(payload)
        self.arrived.set()


async def sender_and_listener(pg_url: str, wakes: Wakes) -> tuple[PostgresStore, PostgresStore]:
    sender, receiver = PostgresStore(pg_url, pool_size=2), PostgresStore(pg_url, pool_size=2)
    await sender.open()
    await receiver.open()
    await receiver.listen(wakes)
    return sender, receiver


async def test_notify_reaches_listeners_and_listen_survives_a_lost_connection(
        pg_url: str) -> None:
    wakes = Wakes()
    got, arrived = wakes.got, wakes.arrived
    sender, receiver = await sender_and_listener(pg_url, wakes)
    try:
        await sender.notify("acme")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == ["acme"]
        # The server drops the listening connection: the store reconnects and wakes once.
        pid = receiver._listen_conn.get_server_pid()
        arrived.clear()
        async with sender._pool.acquire() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(arrived.wait(), 10)
        assert got[-1] == ""
        for _ in range(50):
            if receiver._listen_conn is not None:
                break
            await asyncio.sleep(0.1)
        arrived.clear()
        await sender.notify("beta")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got[-1] == "beta"
    finally:
        await receiver.close()
        await sender.close()


async def test_notify_is_best_effort_and_a_long_payload_wakes_everyone(pg_url: str) -> None:
    """A batch naming a hundred tenants with long ids made a payload past PostgreSQL's 8000
    bytes: the NOTIFY after the commit failed and the stored batch was answered 500."""
    wakes = Wakes()
    sender, receiver = await sender_and_listener(pg_url, wakes)
    try:
        await sender.notify(",".join(f"tenant-{n:03d}-" + "x" * 50 for n in range(140)))
        await asyncio.wait_for(wakes.arrived.wait(), 5)
        assert wakes.got == [""]
    finally:
        await receiver.close()
    await sender.close()
    await sender.notify("acme")  # a closed store: logged, never raised after a commit


async def test_booleans_and_lists_are_coerced(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        async with store.transaction() as tx:
            await tx.execute("tenant_insert", id="t1", name=None, client_base_url=None,
                             client_sync_path="/s", client_attachment_path="/a",
                             client_auth={"method": "none"}, signing_secret=None,
                             rate_limits=None, large_file_config=None,
                             default_account_id=None, active=0, api_key_hash=None, now=1.0)
        assert await store.fetch("tenant_list", active_only=True) == []
        row = await store.fetch_one("enqueue_tenants", ids=["t1", "t2"])
        assert row is not None and row["active"] is False
        assert (await store.fetch_one("tenant_get", id="t1"))["client_auth"] == \
            '{"method": "none"}'
    finally:
        await store.close()


async def _terminate(pg_url: str, pid: int) -> None:
    dsn, _schema = parse_url(pg_url)
    killer = await asyncpg.connect(dsn)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()


@pytest.fixture
async def small_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url, pool_size=2)
    await store.open()
    yield store
    await store.close()


async def test_a_connection_lost_after_the_work_does_not_fail_the_work(
        pg_url: str, small_store: PostgresStore) -> None:
    # A server restart or failover between a COMMIT and the connection's release: the reset
    # that release runs fails, but the work (and the commit) stands.
    async with small_store._connection() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await _terminate(pg_url, pid)
        await asyncio.sleep(0.2)
    assert await small_store.schema_version() == 1  # the pool replaced the lost connection


async def test_a_connection_lost_inside_a_transaction_is_unavailable(
        pg_url: str, small_store: PostgresStore) -> None:
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            async with small_store.transaction() as tx:
                pid = await tx._conn.fetchval("SELECT pg_backend_pid()")
                await _terminate(pg_url, pid)
                await asyncio.sleep(0.1)
                await tx._conn.fetchval("SELECT 1")
    assert await small_store.schema_version() == 1
