"""PostgreSQL restarted under a running worker: it recovers by itself and loses nothing."""

from __future__ import annotations

import asyncio
import email
import os
import shutil
from collections import Counter

import httpx
import pytest

from tests.store.pg import pg_url_fixture  # noqa: F401  (fixture)
from tests.support import factories as f
from tests.support.worker import running_worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _cluster() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return None
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


async def _post(client: httpx.AsyncClient, start: int, count: int) -> int:
    body = {"tenant_id": "acme", "messages": [f.message(i) for i in range(start, start + count)]}
    try:
        r = await client.post("/commands/add-messages", json=body)
    except httpx.HTTPError:
        return 0
    assert r.status_code in (200, 503), r.text  # never a 500
    if r.status_code == 503:
        assert r.json()["code"] == "storage_unavailable"
        return 0
    return int(r.json()["queued"])


async def test_worker_survives_a_postgresql_restart(pg_url, keyring, smtp_server,
                                                    tmp_path) -> None:
    restart = _cluster()
    if restart is None:
        pytest.skip("pg_ctlcluster is not available")
    async with running_worker(tmp_path, keyring, db_url=pg_url) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        accepted = {i for i in range(100)} if await _post(client, 0, 100) == 100 else set()
        assert accepted
        proc = await asyncio.create_subprocess_exec(*restart)
        # keep posting while the server goes down and comes back
        next_id = 100
        while proc.returncode is None:
            if await _post(client, next_id, 10) == 10:
                accepted.update(range(next_id, next_id + 10))
            next_id += 10
            try:
                await asyncio.wait_for(proc.wait(), timeout=0.2)
            except TimeoutError:
                pass
        assert proc.returncode == 0
        for _ in range(100):  # the API recovers without a worker restart
            if await _post(client, next_id, 10) == 10:
                accepted.update(range(next_id, next_id + 10))
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError("the API did not recover after the restart")

        async def delivered() -> Counter[str]:
            return Counter(email.message_from_bytes(m.data)["X-Mail-Proxy-ID"]
                           for m in smtp_server.messages)

        for _ in range(300):
            counts = await delivered()
            if {f"m-{i}" for i in accepted} <= set(counts):
                break
            await asyncio.sleep(0.2)
        counts = await delivered()
        missing = {f"m-{i}" for i in accepted} - set(counts)
        assert not missing, f"{len(missing)} accepted messages never arrived"
        assert max(counts.values()) <= 2  # at-least-once: a duplicate only for in-flight sends
