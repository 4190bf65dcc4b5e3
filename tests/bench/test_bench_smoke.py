"""Each benchmark script runs on a tiny workload so the scripts cannot rot.

Figures are not checked (benchmarks are not timed tests); only that every script runs to the
end and prints its JSON with the fields run_all and docs/performance.md rely on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_bench(*argv: str, timeout: float = 40) -> dict:
    proc = subprocess.run([sys.executable, "-m", *argv, "--quick"], cwd=REPO, timeout=timeout,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-JSON ")]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1][len("BENCH-JSON "):])


@pytest.mark.timeout(60)
def test_all_benchmarks_run_and_report_every_target() -> None:
    summary = run_bench("bench.run_all", timeout=55)
    names = [t["target"] for t in summary["targets"]]
    assert any(n.startswith("POST p50") for n in names)
    assert any(n.startswith("dispatch vs raw ceiling") for n in names)
    assert any(n.startswith("claim cycle") for n in names)
    assert "mail-proxy --help" in names and "mail-proxy list" in names
    assert "idle worker RSS" in names
    for t in summary["targets"]:
        assert isinstance(t["measured"], int | float) and isinstance(t["met"], bool)


def test_python_sink_counts_messages() -> None:
    """The fallback sink must really count: a dispatch run against it delivers everything,
    also when split over two workers, with their own databases or one shared."""
    result = run_bench("bench.dispatch", "--sink", "python", "--split", "2", "--shared")
    assert result["sink"] == "python"
    run = result["connections_2"]
    assert run["worker"]["messages"] == result["messages"] == 40
    assert run["worker"]["msgs_per_s"] > 0 and run["raw_before"]["msgs_per_s"] > 0
    assert run["worker"]["cpu_ms_per_msg"] > 0 and run["raw_before"]["cpu_ms_per_msg"] > 0
    assert len(run["worker"]["busiest_threads_ms_per_msg"]) >= 2
    assert run["split"]["workers"] == 2 and run["split"]["messages"] == 40
    assert run["split"]["msgs_per_s"] > 0
    assert run["split_shared"]["workers"] == 2 and run["split_shared"]["messages"] == 40
    assert run["split_shared"]["msgs_per_s"] > 0


def test_dispatch_through_a_delayed_relay() -> None:
    """bench/delay.py relays everything in order: every message arrives, and the sink is
    named with the round trip it was measured through."""
    result = run_bench("bench.dispatch", "--sink", "python", "--rtt-ms", "2")
    assert result["sink"] == "python, 2 ms round trip"
    run = result["connections_2"]
    for part in ("raw_before", "worker", "channel_only"):
        assert run[part]["messages"] == 40 and run[part]["msgs_per_s"] > 0
    # the relay really delays: aiosmtplib waits for four replies per message, 20 messages
    # per connection, so no less than 20 x 4 x 2 ms (a floor, not a timing expectation)
    assert run["raw_before"]["seconds"] >= 0.16


def test_postgres_scaling_delivers_everything_once() -> None:
    from tests.store import pg

    if not asyncio.run(pg.reachable()):
        pytest.skip(f"no PostgreSQL server at {pg.BASE_URL}")
    result = run_bench("bench.postgres_scaling", timeout=120)
    assert [r["workers"] for r in result["results"]] == [1, 2]
    for r in result["results"]:
        assert r["complete"] and r["delivered"] == r["messages"] == 100
        assert r["duplicates"] == 0 and r["per_second"] > 0


def test_dispatch_on_postgresql() -> None:
    """``--db-url``: the same dispatch run with the worker on PostgreSQL (a schema of its
    own, dropped afterwards), so the two backends are compared under one sink and hour."""
    import asyncpg

    from tests.store import pg

    if not asyncio.run(pg.reachable()):
        pytest.skip(f"no PostgreSQL server at {pg.BASE_URL}")

    async def bench_schemas() -> int:
        conn = await asyncpg.connect(pg.BASE_URL)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'mp_bench_%'"))
        finally:
            await conn.close()

    before = asyncio.run(bench_schemas())
    result = run_bench("bench.dispatch", "--sink", "python", "--db-url", pg.BASE_URL)
    worker = result["connections_2"]["worker"]
    assert worker["database"] == "postgresql"
    assert worker["messages"] == 40 and worker["msgs_per_s"] > 0
    assert asyncio.run(bench_schemas()) == before
