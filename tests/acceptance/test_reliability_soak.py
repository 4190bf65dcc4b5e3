"""A 30-second soak: steady enqueue, dispatch and delivery reports, with the worker's memory
and open file descriptors sampled at the start and the end (issue 6, case 7).

The "start" sample is taken after a short warm-up under the same load, so one-time costs
(imports on first use, SMTP pool, caches, SQLite page cache) are not mistaken for a leak.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.daemon import Daemon, RestartableSmtp, duplicates, figures, message, wait_for

SOAK_SECONDS = 30
WARM_UP_SECONDS = 4
RATE = 50  # messages per second, in batches every 0.5 s
# Bounds on growth between the two samples. Generous for CI noise, far below what a leak of
# one object or descriptor per message would cause (1,500 messages here).
MAX_RSS_GROWTH_MB = 20
MAX_FD_GROWTH = 8


class Receiver:
    """A tenant's sync endpoint on loopback: records entries, acknowledges everything."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: set[str] = set()
        self.calls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner.lock:
                    owner.calls += 1
                    owner.sent.update(e["id"] for e in body.get("delivery_report", [])
                                      if "sent_ts" in e)
                answer = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reported(self) -> int:
        with self.lock:
            return len(self.sent)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def sample(daemon: Daemon) -> tuple[float, int]:
    proc = daemon.worker()
    return proc.memory_info().rss / 1024 / 1024, proc.num_fds()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_soak_enqueue_dispatch_report(daemon: Daemon, smtp: RestartableSmtp,
                                      receiver: Receiver) -> None:
    reporting = importlib.util.find_spec("mail_proxy.reports.reporter") is not None
    if reporting:
        daemon.configure(tenants=[{"id": "acme", "client_base_url": receiver.url}])
    daemon.start()
    worker_pid = daemon.record()["worker_pid"]
    per_batch = RATE // 2
    next_id = 0
    first: tuple[float, int] | None = None
    started = time.monotonic()
    with daemon.client() as client:
        tick = started
        while time.monotonic() - started < WARM_UP_SECONDS + SOAK_SECONDS:
            if first is None and time.monotonic() - started >= WARM_UP_SECONDS:
                first = sample(daemon)
            r = daemon.enqueue(client, [message(i) for i in range(next_id, next_id + per_batch)])
            assert r.status_code == 200, r.text
            next_id += per_batch
            if next_id % (per_batch * 4) == 0:  # readers too, as a real client would
                assert client.get("/messages", params={"tenant_id": "acme",
                                                       "limit": 50}).status_code == 200
                assert client.get("/status").status_code == 200
            tick += 0.5
            time.sleep(max(0.0, tick - time.monotonic()))
        last = sample(daemon)
    assert first is not None
    total = next_id
    wait_for(lambda: daemon.counts().get("sent") == total, 30, "everything sent")
    if reporting:
        wait_for(lambda: receiver.reported() == total, 30, "everything reported")
        wait_for(lambda: daemon.query("SELECT count(*) FROM messages "
                                      "WHERE settled_at IS NULL")[0][0] == 0, 15, "settled")
    assert len(smtp.ids) == total and duplicates(smtp.ids) == 0
    assert daemon.record()["worker_pid"] == worker_pid
    rss_growth, fd_growth = last[0] - first[0], last[1] - first[1]
    figures("soak", seconds=SOAK_SECONDS, messages=total, rate_per_s=RATE,
            reported=receiver.reported() if reporting else "no reporter",
            report_calls=receiver.calls, rss_mb_start=round(first[0], 1),
            rss_mb_end=round(last[0], 1), fds_start=first[1], fds_end=last[1])
    assert rss_growth <= MAX_RSS_GROWTH_MB, f"RSS grew {rss_growth:.1f} MB"
    assert fd_growth <= MAX_FD_GROWTH, f"open fds grew by {fd_growth}"
    assert daemon.stop().returncode == 0
