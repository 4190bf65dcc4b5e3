"""Starve it: the SMTP server goes away, the database is locked (issue 6, cases 4-5).

In both cases the API keeps answering (200, or 503 storage_unavailable while the database
refuses writes, never 500), the worker is not restarted, and every acknowledged message is
delivered once the outage ends.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter

import pytest

from tests.support.daemon import (
    Daemon,
    RestartableSmtp,
    duplicates,
    figures,
    message,
    wait_for,
)

# Two and a half busy_timeouts (5 s): some writes wait it out, others fail and are retried.
LOCK_SECONDS = 12.5
FAST_RETRY = {"retry_delays": [1], "retry_jitter": 0, "max_retries": 50}


def delivered_ids(smtp: RestartableSmtp, ids: list[str]) -> bool:
    seen = smtp.ids
    return all(seen[i] for i in ids)


@pytest.mark.timeout(90)
def test_smtp_down_then_back(daemon: Daemon, smtp: RestartableSmtp) -> None:
    daemon.configure(settings=FAST_RETRY)
    daemon.start()
    worker_pid = daemon.record()["worker_pid"]
    started = time.monotonic()
    acked: list[str] = []
    with daemon.client() as client:
        r = daemon.enqueue(client, [message(i) for i in range(200)])
        assert r.status_code == 200, r.text
        acked += [f"m-{i}" for i in range(200)]
        wait_for(lambda: smtp.total >= 200, 30, "warm-up delivered")

        smtp.down()
        down_at = time.monotonic()
        statuses: Counter[int] = Counter()
        next_id = 200
        while time.monotonic() - down_at < 6:  # keep posting through the outage
            batch = [message(i) for i in range(next_id, next_id + 25)]
            r = daemon.enqueue(client, batch)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                acked += [m["id"] for m in batch]
            next_id += 25
            time.sleep(0.25)
        deferred = daemon.events("deferred")
        assert deferred > 0, "no delivery was attempted during the outage"
        smtp.up()
        outage = time.monotonic() - down_at
        assert set(statuses) == {200}, statuses
        assert (client.get("/health")).status_code == 200

    recovered = wait_for(lambda: daemon.counts().get("sent") == len(acked), 45,
                         "all sent after the outage")
    assert delivered_ids(smtp, acked)
    assert daemon.counts() == {"sent": len(acked)}
    assert duplicates(smtp.ids) == 0
    assert daemon.record()["worker_pid"] == worker_pid and daemon.record()["restarts"] == 0
    codes = daemon.query("SELECT DISTINCT json_extract(metadata, '$.code') FROM message_events "
                         "WHERE event_type = 'deferred'")
    figures("SMTP down then back", messages=len(acked), posts_during_outage=sum(statuses.values()),
            outage_seconds=round(outage, 1), deferred_messages=deferred,
            deferred_codes=sorted(c[0] for c in codes), recovery_seconds=round(recovered, 1),
            duplicates=0, seconds=round(time.monotonic() - started, 1))
    assert daemon.stop().returncode == 0


class Poster(threading.Thread):
    """Posts small batches while the database is locked; records every answer."""

    def __init__(self, daemon: Daemon, first_id: int) -> None:
        super().__init__(daemon=True)
        self.d = daemon
        self.next_id = first_id
        self.answers: list[tuple[int, str | None]] = []
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.d.client(timeout=30) as client:
            while not self.stop.is_set():
                batch = [message(i) for i in range(self.next_id, self.next_id + 10)]
                self.next_id += 10
                r = self.d.enqueue(client, batch)
                code = r.json().get("code") if r.status_code != 200 else None
                self.answers.append((r.status_code, code))
                if r.status_code == 200:
                    self.acked += [m["id"] for m in batch]
                time.sleep(0.2)


@pytest.mark.timeout(120)
def test_sqlite_locked_by_another_process(daemon: Daemon, smtp: RestartableSmtp) -> None:
    daemon.configure(settings=FAST_RETRY)
    daemon.start()
    worker_pid = daemon.record()["worker_pid"]
    first = 2000
    started = time.monotonic()
    with daemon.client() as client:
        r = daemon.enqueue(client, [message(i) for i in range(1000)])
        assert r.status_code == 200
        r = daemon.enqueue(client, [message(i) for i in range(1000, first)])
        assert r.status_code == 200
    wait_for(lambda: smtp.total >= 300, 30, "dispatch under way", every=0.02)

    poster = Poster(daemon, first)
    locker = sqlite3.connect(daemon.db_path, timeout=10, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # every writer of the worker now waits or fails
        locked_at = time.monotonic()
        poster.start()
        time.sleep(LOCK_SECONDS)
        locker.execute("ROLLBACK")
        held = time.monotonic() - locked_at
    finally:
        locker.close()
    time.sleep(2)  # a few posts after the lock, too
    poster.stop.set()
    poster.join(40)

    answers = Counter(poster.answers)
    assert set(answers) <= {(200, None), (503, "storage_unavailable")}, answers
    assert answers[(200, None)] > 0
    everything = [f"m-{i}" for i in range(first)] + poster.acked
    recovered = wait_for(lambda: daemon.counts().get("sent") == len(everything), 60,
                         "every acknowledged message sent")
    assert delivered_ids(smtp, everything)
    assert daemon.query("SELECT count(*) FROM messages WHERE status <> 'sent'")[0][0] == 0
    assert daemon.record()["worker_pid"] == worker_pid and daemon.record()["restarts"] == 0
    # The outcomes of sends that finished during the lock are retried, not turned into
    # failures and sent again.
    assert duplicates(smtp.ids) == 0
    refused = refused_while_locked(daemon)
    figures("SQLite locked", messages=len(everything), lock_seconds=round(held, 1),
            posts_ok=answers[(200, None)], posts_503=answers[(503, "storage_unavailable")],
            duplicates=duplicates(smtp.ids), recovery_seconds=round(recovered, 1),
            lone_post_503_after_s=round(refused, 1), seconds=round(time.monotonic() - started, 1))
    assert daemon.stop().returncode == 0


def refused_while_locked(daemon: Daemon) -> float:
    """A POST that cannot commit answers 503 storage_unavailable, stores nothing, and the
    same request succeeds once the lock is gone. Returns how long the refusal took."""
    locker = sqlite3.connect(daemon.db_path, timeout=10, isolation_level=None)
    with daemon.client() as client:
        try:
            locker.execute("BEGIN EXCLUSIVE")
            asked = time.monotonic()
            r = daemon.enqueue(client, [message("locked")])
            took = time.monotonic() - asked
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "storage_unavailable" and r.json()["ok"] is False
        assert r.headers.get("retry-after")
        r = client.get("/messages/m-locked", params={"tenant_id": "acme"})
        assert r.status_code == 404, r.text
        r = daemon.enqueue(client, [message("locked")])
        assert r.status_code == 200, r.text
    return took
