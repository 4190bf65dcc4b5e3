"""mail-proxy's tables dropped under a running worker (the database dropped and created
again, a schema wiped): the API answers 503, never 500, and the worker stops with exit 75
so that its supervisor starts it again, which creates the tables as a first start does
(PostgreSQL hunt: every request answered 500 until something migrated the database)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

from mail_proxy.instance.states import DATABASE_UNREACHABLE_EXIT
from mail_proxy.server import SETTINGS_POLL
from tests.store.pg import pg_url_fixture  # noqa: F401  (fixture)
from tests.support import factories as f
from tests.support.worker import running_worker

pytestmark = [pytest.mark.postgres]


async def test_a_worker_whose_tables_vanish_answers_503_and_stops_with_75(
        pg_url, keyring, tmp_path) -> None:
    schema = dict(parse_qsl(urlsplit(pg_url).query))["schema"]
    async with running_worker(tmp_path, keyring, db_url=pg_url) as (worker, client):
        await f.tenant(worker.core)
        admin = await asyncpg.connect(pg_url.split("?")[0])
        try:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()
        r = await client.get("/tenants")
        assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
        await asyncio.wait_for(worker.stop_requested.wait(), SETTINGS_POLL * 2 + 5)
        assert worker.exit_code == DATABASE_UNREACHABLE_EXIT
