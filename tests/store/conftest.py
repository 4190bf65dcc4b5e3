"""Fixtures of the store contract tests: the same cases on SQLite and on PostgreSQL.

``core`` is overridden here and parametrised over both backends; each PostgreSQL case gets
its own schema, dropped afterwards. PostgreSQL cases are skipped (not failed) when no server
answers at MAIL_PROXY_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mail_proxy.security.crypto import KeyRing
from tests.store.pg import pg_url_fixture  # noqa: F401  (the `pg_url` fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if db_backend == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def core(db_url: str, keyring: KeyRing) -> AsyncIterator[object]:
    from mail_proxy.manager.core import Core

    c = await Core.open(db_url, keyring, name="test")
    try:
        yield c
    finally:
        await c.close()
