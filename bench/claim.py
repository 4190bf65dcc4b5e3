"""Claim cost with 10^3, 10^5 and 10^6 queued messages.

The queue is built fast with ``executemany`` on a plain sqlite3 connection (indexes dropped
during the load, recreated after). Then a real ``Dispatcher`` runs ``run_once`` cycles on a
Core opened on the file: promotion check, immediate pass, fair pass and the claim transaction
of ``batch_size_per_account`` (50) messages; claimed messages are not sent (the lane hand-off
is stubbed). The same loop also times the enqueue path's ``count_waiting`` query, which is
only run when ``max_queued_messages`` is set.

    python -m bench.claim [--sizes 1000 100000 1000000] [--cycles 40]
"""

from __future__ import annotations

import argparse
import base64
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

from bench import common

COLUMNS = ("tenant_id", "id", "account_id", "status", "priority", "batch_code", "created_at",
           "updated_at", "next_attempt_at", "attempts", "smtp_message_id", "is_pec",
           "has_secrets", "payload")


def fill(db_path: Path, start: int, stop: int) -> float:
    """Add queued messages ``start..stop`` for acme/main; returns seconds spent."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a throw-away load, not the product path
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                               "tbl_name = 'messages' AND sql IS NOT NULL").fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        payload = ('{"from":"Sender <sender@acme.test>","to":["r@example.com"],'
                   '"subject":"s","body":"' + "x" * 200 + '"}')
        base = int(time.time()) - 3600
        rows = (("acme", f"q-{i}", "main", "queued", 2, None, base + i // 1000, base, base, 0,
                 f"<q-{i}@acme.test>", 0, 0, payload) for i in range(start, stop))
        conn.executemany(f"INSERT INTO messages ({', '.join(COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(COLUMNS))})", rows)
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    # The load skipped fsync: a million rows leave hundreds of MB dirty in the page cache,
    # and every durable commit timed next would wait behind their writeback (the claim
    # cycle's commit measured 0.86 ms instead of 0.24 ms right after such a load).
    os.sync()
    return time.perf_counter() - t0


async def measure(db_path: Path, key: str, cycles: int) -> dict[str, Any]:
    from mail_proxy.delivery.dispatcher import Dispatcher
    from mail_proxy.manager.core import Core
    from mail_proxy.security.crypto import KeyRing

    core = await Core.open(f"sqlite://{db_path}", KeyRing([base64.b64decode(key)]))
    try:
        dispatcher = Dispatcher(core, owner="bench:claim", smtp=None)
        dispatcher._enqueue = lambda msg: None  # type: ignore[method-assign]  # no sending
        await dispatcher.run_once()  # warm-up: caches, recovery pass
        cycle, claimed, counting = [], 0, []
        for _ in range(cycles):
            t0 = time.perf_counter()
            claimed += await dispatcher.run_once()
            cycle.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await core.store.fetch_value("count_waiting")
            counting.append(time.perf_counter() - t0)
            # Give the claims back (untimed): every cycle then sees the same queue, and even
            # the smallest one lasts for as many cycles as asked. Each cycle carries a
            # durable commit whose cost varies from one to the next: a median over a few
            # dozen cycles is needed to compare queue sizes.
            async with core.store.transaction() as tx:
                await cast(Any, tx).raw(
                    "UPDATE messages SET status = 'queued', lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE status = 'sending'")
    finally:
        await core.close()
    c = common.latency_summary(cycle)
    return {"cycle_p50_ms": c["p50_ms"], "cycle_max_ms": c["max_ms"],
            "claimed_per_cycle": claimed // cycles,
            "count_waiting_p50_ms": common.latency_summary(counting)["p50_ms"]}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with common.workdir(args.workdir) as folder:
        key = common.new_key()
        db = folder / "claim.db"
        common.run(common.prepare_instance(db, key, 9))
        out["fsync"] = common.fsync_cost(folder)
        filled = 0
        for size in sorted(args.sizes):
            load = fill(db, filled, size)
            filled = size
            result = common.run(measure(db, key, args.cycles))
            out[f"queued_{size}"] = {"build_seconds": round(load, 1), **result}
    sizes = sorted(args.sizes)
    first, last = out[f"queued_{sizes[0]}"], out[f"queued_{sizes[-1]}"]
    out["cycle_ratio_largest_to_smallest"] = round(last["cycle_p50_ms"]
                                                   / max(first["cycle_p50_ms"], 1e-6), 2)
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    p.add_argument("--cycles", type=int, default=40)
    p.add_argument("--workdir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.cycles = [200, 2000], 3
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    common.emit("claim", {"machine": common.machine(), **run_bench(args)})


if __name__ == "__main__":
    main()
