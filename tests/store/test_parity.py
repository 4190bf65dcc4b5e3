"""Both backends must stay twins: the same query names, the same tables, columns and indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from mail_proxy.store import queries as named
from mail_proxy.store.postgres import PostgresStore, parse_url
from mail_proxy.store.sqlite import SqliteStore

Schema = dict[str, dict[str, object]]


def test_every_query_name_exists_in_both_backends() -> None:
    sqlite, postgresql = set(named.load("sqlite")), set(named.load("postgresql"))
    assert sorted(sqlite - postgresql) == [], "queries missing from sql/postgresql/queries"
    assert sorted(postgresql - sqlite) == [], "queries missing from sql/sqlite/queries"


def test_migrations_have_the_same_numbers_and_names() -> None:
    def numbers(backend: str) -> list[tuple[int, str]]:
        return [(v, n) for v, n, _ in named.migrations(backend)]

    assert numbers("sqlite") == numbers("postgresql")


def _sqlite_schema(path: Path) -> Schema:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        columns = {t: sorted((r[1], bool(r[3]) or bool(r[5])) for r in
                             conn.execute(f"PRAGMA table_info({t})")) for t in tables}
        indexes = {}
        for name, table in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE "
                                        "type = 'index' AND sql IS NOT NULL"):
            cols = [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
            unique = bool(next(r[2] for r in conn.execute(f"PRAGMA index_list({table})")
                               if r[1] == name))
            partial = bool(next(r[4] for r in conn.execute(f"PRAGMA index_list({table})")
                                if r[1] == name))
            indexes[name] = (table, cols, unique, partial)
    finally:
        conn.close()
    return {"tables": sorted(tables), "columns": columns, "indexes": indexes}


async def _pg_schema(url: str) -> Schema:
    dsn, schema = parse_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT table_name, column_name, is_nullable, "
                                "column_default IS NULL AND is_identity = 'NO' AS no_default "
                                "FROM information_schema.columns WHERE table_schema = $1", schema)
        columns: dict[str, list[tuple[str, bool]]] = {}
        pks = {(r["table_name"], r["column_name"]) for r in await conn.fetch(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
            "JOIN information_schema.key_column_usage k USING (constraint_schema, "
            "constraint_name) WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = $1",
            schema)}
        for r in rows:
            # SQLite reports NOT NULL only when declared; a PRIMARY KEY column counts as such.
            not_null = r["is_nullable"] == "NO" or (r["table_name"], r["column_name"]) in pks
            columns.setdefault(r["table_name"], []).append((r["column_name"], not_null))
        indexes = {}
        for r in await conn.fetch(
                "SELECT i.relname AS name, t.relname AS tbl, ix.indisunique AS uniq, "
                "ix.indpred IS NOT NULL AS partial, array(SELECT a.attname FROM unnest("
                "ix.indkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = t.oid "
                "AND a.attnum = k.n ORDER BY k.o) AS cols FROM pg_index ix "
                "JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid "
                "JOIN pg_namespace s ON s.oid = t.relnamespace WHERE s.nspname = $1 AND NOT "
                "EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)", schema):
            indexes[r["name"]] = (r["tbl"], list(r["cols"]), r["uniq"], r["partial"])
    finally:
        await conn.close()
    return {"tables": sorted(columns), "columns": {t: sorted(c) for t, c in columns.items()},
            "indexes": indexes}


async def test_both_migrations_build_the_same_schema(tmp_path: Path, pg_url: str) -> None:
    lite = SqliteStore(str(tmp_path / "s.db"))
    await lite.open()
    await lite.close()
    store = PostgresStore(pg_url)
    await store.open()
    await store.close()
    expected = _sqlite_schema(tmp_path / "s.db")
    actual = await _pg_schema(pg_url)
    assert actual["tables"] == expected["tables"]
    for table, cols in expected["columns"].items():  # type: ignore[union-attr]
        assert actual["columns"][table] == cols, table  # type: ignore[index]
    assert actual["indexes"] == expected["indexes"]
