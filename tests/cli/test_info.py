"""``info``, ``stats``, ``suspend``/``activate`` and ``run-now`` without a running worker."""

from __future__ import annotations

import json
from typing import Any


def test_info_stats_suspension(cli: Any, tenant: str) -> None:
    doc = json.loads(cli("main", "info", "--json").out)
    assert (doc["name"], doc["state"], doc["tenants"], doc["accounts"]) == (
        "main", "STOPPED", 1, 0)
    assert doc["schema_version"] >= 1
    stats = json.loads(cli("main", "stats", "--json").out)
    assert stats["tenants"]["acme"]["messages"]["queued"] == 0
    assert stats["oldest_queued_age_seconds"] is None
    r = cli("main", "acme", "suspend", "--batch", "b1")
    assert r.out == "suspended: b1\npending messages: 0\n"
    r = cli("main", "acme", "suspend", "--json")
    assert json.loads(r.out)["suspended_batches"] == ["*"]
    r = cli("main", "acme", "activate", "--batch", "b1")
    assert r.code == 1 and "suspended as a whole" in r.err
    r = cli("main", "acme", "activate")
    assert r.out == "suspended: none\npending messages: 0\n"
    r = cli("main", "acme", "info", "--json")
    assert json.loads(r.out)["tenant"]["suspended_batches"] == []
    r = cli("main", "run-now")
    assert (r.code, r.err.splitlines()[0]) == (3, "error: instance 'main' is not running")
    r = cli("main", "acme", "run-now")
    assert r.code == 3


def test_stats_counts_messages_sent_in_the_last_hour(cli: Any, tenant: str,
                                                      instance: Any) -> None:
    import asyncio
    import sqlite3
    import time

    from mail_proxy.manager.core import Core
    from mail_proxy.security.crypto import KeyRing
    from tests.support import factories

    async def fill() -> None:
        core = await Core.open(instance.db_url, KeyRing.load(instance.folder))
        try:
            await factories.account(core, 2525)
            await factories.enqueue(core, *(factories.message(i) for i in range(4)))
        finally:
            await core.close()

    asyncio.run(fill())
    now = int(time.time())
    with sqlite3.connect(instance.db_url[len("sqlite://"):]) as db:  # no limits: no send_log
        db.execute("UPDATE messages SET status = 'sent', sent_at = ? WHERE id IN ('m-0', 'm-1',"
                   " 'm-2')", (now - 60,))
        db.execute("UPDATE messages SET sent_at = ? WHERE id = 'm-2'", (now - 7200,))
    doc = json.loads(cli("main", "stats", "--json").out)
    assert (doc["sent_last_hour"], doc["send_log_last_hour"]) == (2, 0)
    assert "sent in the last hour: 2\n" in cli("main", "stats").out
