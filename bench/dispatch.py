"""End-to-end dispatch throughput against the raw-client ceiling, with the same sink and the
same number of SMTP connections.

* worker: ``N`` x 1 KB messages posted in batches of 1,000 to one account whose
  ``max_connections`` is ``C``; timed from the first POST until the worker has recorded the
  last message as sent (the sink's 250 reply has then been received);
* ``cpu_ms_per_msg``: the worker's CPU time (all threads, user and system) over the same
  span, per message;
* ``channel_only``: the worker's pipelined SMTP channel driven by a bare loop, same sink
  and connections (no HTTP, database or bookkeeping): the SMTP share of the worker's cost;
* ceiling: aiosmtplib with ``C`` connections, each sending its share back to back, timed
  until the last 250 reply.

The sink is Postfix's ``smtp-sink`` when installed (see bench/README.md), else bench/sink.py;
the result says which.

    python -m bench.dispatch [--messages 5000] [--connections 1 4] [--sink auto]
                             [--settings '{"max_concurrent_sends": 60}'] [--split 2 [--shared]]
                             [--rtt-ms 2] [--db-url postgresql://...]

``--rtt-ms`` puts bench/delay.py between every client and the sink: loopback hides what
pipelining saves (one round trip per message instead of four).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from bench import common
from bench.enqueue import PATH, RssSampler


def wire_message(i: int, size: int = 1024) -> bytes:
    """What the raw client sends: a MIME message of about ``size`` bytes, like the worker's."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@acme.test>"
    msg["To"] = f"rcpt{i}@example.com"
    msg["Subject"] = f"Bench {i}"
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg.set_content(common.message(i, size)["body"])
    return msg.as_bytes()


def rate(messages: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """The figures every dispatch measurement reports: count, time, rate, CPU per message."""
    return {"messages": messages, "seconds": round(seconds, 3),
            "msgs_per_s": round(messages / seconds, 1),
            "cpu_ms_per_msg": round(cpu_seconds * 1000 / messages, 3)}


async def raw_ceiling(port: int, total: int, connections: int) -> dict[str, Any]:
    import aiosmtplib

    share = [total // connections + (1 if c < total % connections else 0)
             for c in range(connections)]
    payloads = [[wire_message(c * total + i) for i in range(share[c])]
                for c in range(connections)]
    clients = []
    for _ in range(connections):
        client = aiosmtplib.SMTP(hostname=common.HOST, port=port, start_tls=False,
                                 use_tls=False, timeout=30)
        await client.connect()
        clients.append(client)

    async def pump(c: int) -> None:
        for i, data in enumerate(payloads[c]):
            await clients[c].sendmail("sender@acme.test", [f"rcpt{c}-{i}@example.com"], data)

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(pump(c) for c in range(connections)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for client in clients:
        await client.quit()
    return rate(total, elapsed, cpu)


async def channel_only(port: int, total: int, connections: int) -> dict[str, Any]:
    """The worker's own SMTP channel (pipelined) with nothing else around it: the SMTP part
    of a delivered message's cost, to set against the raw client's and the worker's."""
    import aiosmtplib

    from mail_proxy.delivery.smtp_channel import Pending, SmtpChannel

    channels = []
    for _ in range(connections):
        client = aiosmtplib.SMTP(hostname=common.HOST, port=port, start_tls=False,
                                 use_tls=False, timeout=30)
        await client.connect()
        await client.ehlo()  # PIPELINING is seen in the EHLO reply, as the pool does
        channels.append(SmtpChannel.take_over(client))
    payloads = [wire_message(i) for i in range(total)]

    async def pump(c: int) -> None:
        # like a worker's send loop: the next envelope goes out before the final reply
        previous: Pending | None = None
        for i in range(c, total, connections):
            pending = await channels[c].begin("sender@acme.test", [f"rcpt{i}@example.com"],
                                              payloads[i])
            if previous is not None:
                await channels[c].finish(previous)
            previous = pending
        if previous is not None:
            await channels[c].finish(previous)

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(pump(c) for c in range(connections)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for channel in channels:
        await channel.command(b"QUIT")
        channel.close()
    return rate(total, elapsed, cpu)


async def post_all(port: int, total: int, tag: str) -> float:
    """Post ``total`` messages in batches of 1,000; returns the monotonic start time."""
    size = min(1000, total)
    bodies = [json.dumps({"tenant_id": "acme",
                          "messages": [common.message(f"{tag}-{r}-{i}", 1024)
                                       for i in range(min(size, total - r * size))]}).encode()
              for r in range((total + size - 1) // size)]
    async with common.RawHttp(port) as raw:
        start = time.monotonic()
        for b in bodies:
            status, answer = await raw.post(PATH, b)
            assert status == 200, answer[:300]
    return start


def prepare(args: argparse.Namespace, worker: common.WorkerProcess, sink: common.Sink,
            connections: int) -> None:
    """The worker's database: one account on the sink, the benchmark's runtime settings."""
    common.run(common.prepare_instance(
        worker.db_url or worker.db_path, worker.key, sink.port, max_connections=connections,
        settings={"command_log_enabled": not args.no_command_log, **args.settings}))


def worker_run(args: argparse.Namespace, sink: common.Sink, connections: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(common.workdir(args.workdir))
        db_url = stack.enter_context(common.pg_schema(args.db_url)) if args.db_url else None
        worker = common.WorkerProcess(folder, common.free_port(), common.new_key(),
                                      db_url=db_url)
        prepare(args, worker, sink, connections)
        fsync = common.fsync_cost(folder)
        worker.start()
        try:
            time.sleep(0.5)
            idle = worker.rss_mb()
            sampler = RssSampler(worker)
            sampler.start()
            cpu_before = worker.cpu_seconds()
            threads_before = worker.thread_cpu_seconds()
            start = common.run(post_all(worker.port, args.messages, f"d{connections}"))
            posted = time.monotonic()
            end = common.wait_sent(worker.db_url or worker.db_path, args.messages,
                                   timeout=args.timeout)
            cpu = worker.cpu_seconds() - cpu_before
            threads = worker.thread_cpu_seconds()
            busiest = sorted((v - threads_before.get(k, 0.0) for k, v in threads.items()),
                             reverse=True)
            sampler.stop_flag.set()
            sampler.join()
        finally:
            worker.stop()
    elapsed = end - start
    # CPU: all threads of the worker, enqueue included; steadier than msgs/s when the
    # machine drifts, so changes to the per-message cost are compared on it
    return {**rate(args.messages, elapsed, cpu), "database": "postgresql" if db_url else "sqlite",
            "enqueue_seconds": round(posted - start, 3), "fsync_p50_ms": fsync["p50_ms"],
            # the event loop's thread is the busiest, the database thread next
            "busiest_threads_ms_per_msg": [round(b * 1000 / args.messages, 3)
                                           for b in busiest[:3]],
            "rss_idle_mb": idle, "rss_peak_mb": sampler.peak}


def split_run(args: argparse.Namespace, sink: common.Sink, connections: int,
              parts: int) -> dict[str, Any]:
    """``parts`` independent workers, each on its own SQLite file with its share of the
    messages and connections, started together: what a second core could add on this
    machine with no shared database at all (an upper bound for any multi-process design).
    """
    total = args.messages // parts * parts
    with contextlib.ExitStack() as stack:
        workers = []
        for _ in range(parts):
            folder = stack.enter_context(common.workdir(args.workdir))
            worker = common.WorkerProcess(folder, common.free_port(), common.new_key())
            prepare(args, worker, sink, max(connections // parts, 1))
            workers.append(worker)
            stack.callback(worker.stop)
            worker.start()
        time.sleep(0.5)
        cpu_before = sum(w.cpu_seconds() for w in workers)
        ends: list[float] = []

        def one(i: int, worker: common.WorkerProcess) -> None:
            common.run(post_all(worker.port, total // parts, f"s{i}"))
            ends.append(common.wait_sent(worker.db_path, total // parts, timeout=args.timeout))

        start = time.monotonic()
        threads = [threading.Thread(target=one, args=(i, w)) for i, w in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(ends) != parts:
            raise RuntimeError("a split worker did not finish")
        cpu = sum(w.cpu_seconds() for w in workers) - cpu_before
    elapsed = max(ends) - start
    return {"workers": parts, **rate(total, elapsed, cpu)}


def shared_run(args: argparse.Namespace, sink: common.Sink, connections: int,
               parts: int) -> dict[str, Any]:
    """``parts`` workers on one SQLite file (C/N connections each), all messages posted to
    the first: what a second process adds when it shares the queue, as several instances
    would. Each commit then waits for SQLite's file lock, whose busy handler polls with
    sleeps. Also a stress test: it found claimed messages stranded in a lane once.
    """
    with common.workdir(args.workdir) as folder:
        key = common.new_key()
        workers = [common.WorkerProcess(folder, common.free_port(), key) for _ in range(parts)]
        prepare(args, workers[0], sink, max(connections // parts, 1))  # one file for all
        with contextlib.ExitStack() as stack:
            for worker in workers:
                stack.callback(worker.stop)
                worker.start()
            time.sleep(0.5)
            cpu_before = sum(w.cpu_seconds() for w in workers)
            start = common.run(post_all(workers[0].port, args.messages, "sh"))
            end = common.wait_sent(workers[0].db_path, args.messages, timeout=args.timeout)
            cpu = sum(w.cpu_seconds() for w in workers) - cpu_before
    return {"workers": parts, **rate(args.messages, end - start, cpu)}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": args.messages}
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(common.smtp_sink(args.sink))
        if args.rtt_ms:
            sink = stack.enter_context(common.delayed(sink, args.rtt_ms))
        out["sink"] = sink.kind
        for c in args.connections:
            raw = common.run(raw_ceiling(sink.port, args.messages, c))
            ours = worker_run(args, sink, c)
            raw_after = common.run(raw_ceiling(sink.port, args.messages, c))
            channel = common.run(channel_only(sink.port, args.messages, c))
            # the ceiling is measured before and after: the machine drifts
            ceiling = max(raw["msgs_per_s"], raw_after["msgs_per_s"])
            out[f"connections_{c}"] = {
                "raw_before": raw, "raw_after": raw_after, "worker": ours,
                "channel_only": channel,
                "ratio_to_ceiling": round(ours["msgs_per_s"] / ceiling, 3)}
            variants: list[tuple[str, Any]] = []
            if args.split > 1 and c >= args.split:
                variants.append(("split", split_run))
                if args.shared:
                    variants.append(("split_shared", shared_run))
            for name, variant in variants:
                result = variant(args, sink, c, args.split)
                out[f"connections_{c}"][name] = {
                    **result, "ratio_to_ceiling": round(result["msgs_per_s"] / ceiling, 3)}
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    p.add_argument("--sink", choices=["auto", "smtp-sink", "python"], default="auto")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--no-command-log", action="store_true",
                   help="disable the command log (shows its cost)")
    p.add_argument("--settings", type=json.loads, default={},
                   help='runtime settings for the worker, as JSON, e.g. '
                        '\'{"max_concurrent_sends": 60, "batch_size_per_account": 100}\'')
    p.add_argument("--split", type=int, default=1, metavar="N",
                   help="also run N independent workers (own SQLite each, C/N connections "
                        "each) to see what more cores could add")
    p.add_argument("--rtt-ms", type=float, default=0.0, metavar="MS",
                   help="put a relay in front of the sink that adds MS to every round trip "
                        "(bench/delay.py): a network instead of loopback")
    p.add_argument("--shared", action="store_true",
                   help="with --split: also run the N workers on one shared SQLite file")
    p.add_argument("--db-url", default=None, metavar="URL",
                   help="run the worker on this PostgreSQL server (a fresh schema, dropped "
                        "afterwards) instead of SQLite, e.g. "
                        "postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--workdir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny workload (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.connections, args.timeout = 40, [2], 30.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    common.emit("dispatch", {"machine": common.machine(), **run_bench(args)})


if __name__ == "__main__":
    main()
