"""Dispatch throughput of 1, 2 and 3 workers sharing one PostgreSQL database.

Each run gets a fresh schema, queues MESSAGES messages for one account pointing at a fast
in-process SMTP sink, starts N `mail-proxy serve` processes and times how long the sink takes
to receive every message (from the first one received, so start-up is not counted). The
time the queue took to fill (add-messages in-process, batches of 1,000, four at a time) is
reported too.

    python bench/postgres_scaling.py [--messages 5000] [--workers 1,2,3]
        [--url postgresql://postgres@127.0.0.1:5432/test] [--quick]

Prints one ``BENCH-JSON {...}`` line, like the other benchmarks, and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.store import cluster, pg

SETTINGS = {"batch_size_per_account": 200, "max_concurrent_sends": 50,
            "smtp_max_connections": 10, "lease_seconds": 60}


async def run(workers: int, messages: int, base: str) -> dict[str, object]:
    schema = pg.new_schema_name("bench")
    url = pg.schema_url(schema, base)
    keyring = cluster.new_keyring()
    try:
        async with cluster.CountingSink() as sink:
            enqueue = await cluster.prepare(url, keyring, sink.port, messages,
                                            settings=SETTINGS, max_connections=10,
                                            batch_size=200)
            with tempfile.TemporaryDirectory() as tmp:
                procs = cluster.start_workers(workers, url, keyring, Path(tmp))
                started = time.monotonic()
                try:
                    done = await cluster.wait_for(sink, messages, timeout=600)
                finally:
                    await cluster.stop_workers(procs)
            first, last = min(sink.times), max(sink.times)
            seconds = max(last - first, 1e-6)
            return {"workers": workers, "messages": messages, "delivered": len(sink.ids),
                    "duplicates": sink.duplicates, "complete": done,
                    "seconds": round(seconds, 2),
                    "wall_seconds": round(time.monotonic() - started, 2),
                    "per_second": round(sink.received / seconds, 1),
                    # add-messages in-process, batches of 1,000, four at a time
                    "enqueue_per_second": round(messages / enqueue, 1)}
    finally:
        await pg.drop_schema(schema, base)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--url", default=pg.BASE_URL)
    parser.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.workers = 100, "1,2"
    results = [await run(int(n), args.messages, args.url) for n in args.workers.split(",")]
    print("BENCH-JSON " + json.dumps({"bench": "postgres_scaling", "results": results}),
          flush=True)
    print(f"{'workers':>7} {'messages':>8} {'seconds':>8} {'msg/s':>8} {'dups':>5} "
          f"{'enqueue msg/s':>13}")
    for r in results:
        print(f"{r['workers']:>7} {r['messages']:>8} {r['seconds']:>8} {r['per_second']:>8} "
              f"{r['duplicates']:>5} {r['enqueue_per_second']:>13}")


if __name__ == "__main__":
    asyncio.run(main())
