"""Three `mail-proxy serve` workers on one PostgreSQL database (delivery.md §2.6, §6.2).

A fast SMTP sink counts Message-IDs: nothing lost, nothing sent twice, a per-minute limit
held across workers, and a worker killed with SIGKILL costs at most what it had in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mail_proxy.manager.core import Core
from mail_proxy.manager.messages import counts
from tests.store import cluster
from tests.store.pg import pg_url_fixture  # noqa: F401  (the `pg_url` fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(170)]
SETTINGS = {"batch_size_per_account": 200, "max_concurrent_sends": 20,
            "smtp_max_connections": 10, "lease_seconds": 30}


@pytest.fixture
async def sink() -> AsyncIterator[cluster.CountingSink]:
    async with cluster.CountingSink() as s:
        yield s


async def _db_counts(url: str, keyring) -> dict[str, int]:
    core = await Core.open(url, keyring, name="check")
    try:
        return await counts(core, "acme")
    finally:
        await core.close()


async def test_three_workers_deliver_20000_messages_exactly_once(
        pg_url: str, sink: cluster.CountingSink, tmp_path: Path) -> None:
    keyring = cluster.new_keyring()
    await cluster.prepare(pg_url, keyring, sink.port, 20_000, settings=SETTINGS,
                          max_connections=10, batch_size=200)
    workers = cluster.start_workers(3, pg_url, keyring, tmp_path)
    try:
        done = await cluster.wait_for(sink, 20_000, timeout=120)
        await asyncio.sleep(1.0)  # anything sent twice would arrive now
    finally:
        await cluster.stop_workers(workers)
    assert done, f"only {len(sink.ids)} of 20000 arrived"
    assert len(sink.ids) == 20_000 and sink.duplicates == 0
    assert (await _db_counts(pg_url, keyring))["sent"] == 20_000


async def test_per_minute_limit_holds_across_three_workers(
        pg_url: str, sink: cluster.CountingSink, tmp_path: Path) -> None:
    keyring = cluster.new_keyring()
    await cluster.prepare(pg_url, keyring, sink.port, 300, settings=SETTINGS,
                          limit_per_minute=40, max_connections=10)
    workers = cluster.start_workers(3, pg_url, keyring, tmp_path)
    try:
        assert await cluster.wait_for(sink, 40, timeout=30)
        await asyncio.sleep(6.0)  # every worker had several cycles to overshoot
    finally:
        await cluster.stop_workers(workers)
    assert sink.received == 40 and sink.duplicates == 0
    assert max(sink.times) - min(sink.times) < 60
    assert (await _db_counts(pg_url, keyring))["sent"] == 40


async def test_a_killed_worker_loses_nothing(
        pg_url: str, sink: cluster.CountingSink, tmp_path: Path) -> None:
    keyring = cluster.new_keyring()
    total = 4000
    await cluster.prepare(pg_url, keyring, sink.port, total, settings=SETTINGS,
                          max_connections=10, batch_size=200)
    workers = cluster.start_workers(3, pg_url, keyring, tmp_path)
    try:
        assert await cluster.wait_for(sink, total // 4, timeout=40)
        workers[0].kill()  # SIGKILL: no drain, its leases must expire (lease_seconds = 30)
        done = await cluster.wait_for(sink, total, timeout=75)
        await asyncio.sleep(1.0)
    finally:
        await cluster.stop_workers(workers)
    assert done, f"only {len(sink.ids)} of {total} arrived"
    assert len(sink.ids) == total
    # At least once: only sends in progress at the kill can be repeated (max_concurrent_sends).
    assert sink.duplicates <= SETTINGS["max_concurrent_sends"]
    c = await _db_counts(pg_url, keyring)
    assert c["sent"] == total and c["sending"] == 0
