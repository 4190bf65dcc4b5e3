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
