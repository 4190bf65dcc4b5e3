"""Throw-away PostgreSQL schemas on the local test server, for tests and the bench script."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import asyncpg
import pytest

BASE_URL = os.environ.get("MAIL_PROXY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def schema_url(schema: str, base: str = BASE_URL) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def new_schema_name(prefix: str = "t") -> str:
    return f"mp_{prefix}_{secrets.token_hex(5)}"


async def reachable(base: str = BASE_URL) -> bool:
    try:
        conn = await asyncpg.connect(base, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def drop_schema(schema: str, base: str = BASE_URL) -> None:
    conn = await asyncpg.connect(base, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """A URL whose ``?schema=`` is a fresh schema, dropped afterwards; skips without a server.

    A plain fixture with its own short-lived loops, so sync and async tests can both use it.
    """
    if not asyncio.run(reachable()):
        pytest.skip(f"no PostgreSQL server at {BASE_URL}")
    schema = new_schema_name()
    try:
        yield schema_url(schema)
    finally:
        asyncio.run(drop_schema(schema))
