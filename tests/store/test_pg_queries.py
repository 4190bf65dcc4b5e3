"""PostgreSQL-only checks of the named queries: every one parses and types its parameters."""

from __future__ import annotations

import pytest

from mail_proxy.store import queries as named
from mail_proxy.store.postgres import PostgresStore, convert, parse_url


def test_placeholders_become_numbered_and_keep_casts_and_literals() -> None:
    sql, names = convert("SELECT ':x', a::text FROM t -- :y\n WHERE b = :b AND c = :a::int "
                         "AND d = :b")
    assert sql == "SELECT ':x', a::text FROM t -- :y\n WHERE b = $1 AND c = $2::int AND d = $1"
    assert names == ["b", "a"]


def test_schema_option_leaves_the_dsn() -> None:
    dsn, schema = parse_url("postgres://u@h:5432/db?schema=s1&sslmode=disable")
    assert (dsn, schema) == ("postgresql://u@h:5432/db?sslmode=disable", "s1")
    _, schema = parse_url("postgresql://u@h/db?options=-csearch_path%3Dother")
    assert schema == "other"
    with pytest.raises(ValueError):
        parse_url("postgresql://u@h/db?schema=a;drop")


async def test_every_query_prepares(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        failures = {}
        async with store._pool.acquire() as conn:
            for name in named.load("postgresql"):
                try:
                    await store.prepared(conn, name)
                except Exception as exc:
                    failures[name] = f"{type(exc).__name__}: {exc}"
        assert failures == {}
    finally:
        await store.close()
