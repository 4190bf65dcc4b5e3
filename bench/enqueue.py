"""Enqueue benchmarks against a worker subprocess (dispatch disabled so only the API runs).

1. latency of single-message POSTs, sequential on one keep-alive connection, measured with a
   raw HTTP/1.1 client and with httpx (to show the client library's own share);
2. 16 concurrent clients posting single messages (msgs/s), plus an in-process check that
   concurrent enqueues (``SqliteStore.grouped_insert``) and ``grouped`` writers really
   share commits;
3. throughput with batches of 100 and 1,000 messages;
4. single-message POST latency while another client streams batches of 1,000;
and the worker's RSS when idle and at the peak of the load.

    python -m bench.enqueue [--requests 1000] [--clients 16] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench import common

PATH = "/commands/add-messages"


def body(messages: list[dict[str, Any]]) -> bytes:
    return json.dumps({"tenant_id": "acme", "messages": messages}).encode()


async def single_latency(port: int, n: int, offset: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    bodies = [body([common.message(f"s{offset + i}", 1024)]) for i in range(n + 2 * 50)]
    async with common.RawHttp(port) as raw:
        samples = []
        for i, b in enumerate(bodies[:n + 50]):
            t0 = time.perf_counter()
            status, _ = await raw.post(PATH, b)
            if i >= 50:  # warm-up: caches, first WAL pages
                samples.append(time.perf_counter() - t0)
            assert status == 200, status
    out["raw_client"] = common.latency_summary(samples)
    m = max(n // 4, 50)
    headers = {"X-API-Token": common.TOKEN, "Content-Type": "application/json"}
    hx_bodies = [body([common.message(f"h{offset + i}", 1024)]) for i in range(m + 20)]
    async with httpx.AsyncClient(base_url=f"http://{common.HOST}:{port}", headers=headers) as c:
        samples = []
        for i, b in enumerate(hx_bodies):
            t0 = time.perf_counter()
            r = await c.post(PATH, content=b)
            if i >= 20:
                samples.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    out["httpx_client"] = common.latency_summary(samples)
    out["httpx_overhead_p50_ms"] = round(out["httpx_client"]["p50_ms"]
                                         - out["raw_client"]["p50_ms"], 3)
    return out


async def concurrent(port: int, clients: int, per_client: int, offset: int) -> dict[str, Any]:
    bodies = [[body([common.message(f"c{offset}-{c}-{i}", 1024)]) for i in range(per_client)]
              for c in range(clients)]
    latencies: list[float] = []

    async def one(c: int) -> None:
        async with common.RawHttp(port) as raw:
            for b in bodies[c]:
                t0 = time.perf_counter()
                status, _ = await raw.post(PATH, b)
                latencies.append(time.perf_counter() - t0)
                assert status == 200, status

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(clients)))
    elapsed = time.perf_counter() - t0
    total = clients * per_client
    lat = common.latency_summary(latencies)
    return {"clients": clients, "messages": total, "seconds": round(elapsed, 3),
            "msgs_per_s": round(total / elapsed, 1), "p50_ms": lat["p50_ms"],
            "p99_ms": lat["p99_ms"]}


async def singles_under_batches(port: int, singles: int, size: int = 1000) -> dict[str, Any]:
    """Latency of single-message POSTs (one every 2 ms) while another client posts batches
    of ``size`` back to back: what a small request waits behind a big one."""
    done = False
    streamed = 0

    async def stream() -> None:
        nonlocal streamed
        async with common.RawHttp(port) as raw:
            while not done:
                b = body([common.message(f"u{streamed}-{i}", 1024) for i in range(size)])
                status, _ = await raw.post(PATH, b)
                assert status == 200, status
                streamed += 1

    streamer = asyncio.create_task(stream())
    latencies = []
    try:
        async with common.RawHttp(port) as raw:
            for i in range(singles):
                b = body([common.message(f"us{i}", 1024)])
                t0 = time.perf_counter()
                status, _ = await raw.post(PATH, b)
                latencies.append(time.perf_counter() - t0)
                assert status == 200, status
                await asyncio.sleep(0.002)
    finally:
        done = True
        await streamer
    lat = common.latency_summary(latencies)
    return {"singles": singles, "batch": size, "batches_streamed": streamed,
            "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "p99_ms": lat["p99_ms"]}


async def batches(port: int, size: int, total: int, offset: str) -> dict[str, Any]:
    requests = max(total // size, 1)
    bodies = [body([common.message(f"{offset}-{r}-{i}", 1024) for i in range(size)])
              for r in range(requests + 1)]
    async with common.RawHttp(port) as raw:
        status, _ = await raw.post(PATH, bodies[0])  # warm-up
        latencies = []
        t0 = time.perf_counter()
        for b in bodies[1:]:
            t1 = time.perf_counter()
            status, answer = await raw.post(PATH, b)
            latencies.append(time.perf_counter() - t1)
            assert status == 200 and json.loads(answer)["queued"] == size, answer[:300]
        elapsed = time.perf_counter() - t0
    n = requests * size
    return {"batch": size, "messages": n, "seconds": round(elapsed, 3),
            "msgs_per_s": round(n / elapsed, 1),
            "request_p50_ms": common.latency_summary(latencies)["p50_ms"],
            "body_kb": round(len(bodies[1]) / 1024, 1)}


async def grouping_check(folder: Path, writers: int = 64) -> dict[str, Any]:
    """Count the transactions that ``writers`` concurrent callers really take: enqueues
    (``grouped_insert``, what add-messages uses) and general ``grouped`` work."""
    from mail_proxy.store.sqlite import SqliteStore

    store = SqliteStore(str(folder / "grouping.db"))
    await store.open()
    commits = 0
    plain_transaction, plain_hand = store.transaction, store._hand_transaction

    def counting() -> Any:
        nonlocal commits
        commits += 1
        return plain_transaction()

    async def counting_hand(fn: Any) -> Any:
        nonlocal commits
        commits += 1
        return await plain_hand(fn)

    store.transaction = counting  # type: ignore[method-assign]
    store._hand_transaction = counting_hand  # type: ignore[method-assign]
    log = {"command_ts": 1, "actor": "bench", "endpoint": "grouping", "tenant_id": None,
           "payload": "{}", "response_status": 200, "response_body": "{}"}
    try:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(store.grouped_insert("command_log_insert", [log])
                                      for _ in range(writers)))
        elapsed = time.perf_counter() - t0
        insert_commits, commits = commits, 0

        async def work(tx: Any) -> int:
            await tx.raw("CREATE TABLE IF NOT EXISTS g (v INTEGER)")
            await tx.raw("INSERT INTO g VALUES (1)")
            return 1

        general = await asyncio.gather(*(store.grouped(work) for _ in range(writers)))
    finally:
        await store.close()
    return {"concurrent_writers": writers, "commits": insert_commits, "ok": sum(done),
            "seconds": round(elapsed, 4), "general_commits": commits,
            "general_ok": sum(general)}


class RssSampler(threading.Thread):
    def __init__(self, worker: common.WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker, self.peak, self.stop_flag = worker, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(0.05):
            self.peak = max(self.peak, self.worker.rss_mb())


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    with common.workdir(args.workdir) as folder:
        worker = common.WorkerProcess(folder, common.free_port(), common.new_key())
        common.run(common.prepare_instance(worker.db_path, worker.key, 9,
                                           settings={"dispatch_enabled": False}))
        fsync = common.fsync_cost(folder)
        grouping = common.run(grouping_check(folder))
        worker.start()
        try:
            time.sleep(1.0)
            rss_idle = worker.rss_mb()
            sampler = RssSampler(worker)
            sampler.start()
            single = common.run(single_latency(worker.port, args.requests, 0))
            conc = common.run(concurrent(worker.port, args.clients,
                                         max(args.requests // args.clients, 4), 0))
            b100 = common.run(batches(worker.port, 100, args.batch_total // 2, "b100"))
            b1000 = common.run(batches(worker.port, min(1000, args.batch_total),
                                       args.batch_total, "b1000"))
            mixed = common.run(singles_under_batches(worker.port, max(args.requests // 4, 20),
                                                     min(1000, args.batch_total)))
            sampler.stop_flag.set()
            sampler.join()
            rss = {"idle_mb": rss_idle, "peak_under_load_mb": sampler.peak}
        finally:
            worker.stop()
        fsync_after = common.fsync_cost(folder)
    return {"fsync_before": fsync, "fsync_after": fsync_after, "single_post": single,
            "concurrent": conc, "grouping": grouping, "batch_100": b100, "batch_1000": b1000,
            "singles_under_batches": mixed,
            "worker_rss": rss}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="single-message POSTs (>= 1000)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batch-total", type=int, default=20000,
                   help="messages sent in batches of 1,000 (half as many in batches of 100)")
    p.add_argument("--workdir", default=None, help="where the throw-away database lives")
    p.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.clients, args.batch_total = 60, 4, 200
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    common.emit("enqueue", {"machine": common.machine(), **run_bench(args)})


if __name__ == "__main__":
    main()
