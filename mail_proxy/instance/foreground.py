"""A worker run with ``mail-proxy serve NAME`` (systemd, containers) in the instance record.

Such a worker has no supervisor, but the rest of the CLI finds running instances through
``supervisor.json``: without a record, ``list`` and ``status`` said STOPPED while it served,
``run-now`` said "not running", ``start`` failed on the busy port and ``rotate-key`` could not
tell it to reload its key ring. The foreground worker therefore takes the supervisor's lock
(so no supervisor or second ``serve`` can start beside it) and records itself in both roles:
``stop`` and the reload signals reach it as they reach a supervisor, which passes them on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from mail_proxy import __version__
from mail_proxy.instance.states import (
    State,
    new_record,
    process_create_time,
    process_since_boot,
    write_record,
)
from mail_proxy.instance.supervisor import take_lock


class Run:
    """What the foreground worker reports back: its exit code, recorded when it ends."""

    exit_code: int | None = None


@contextlib.contextmanager
def recorded_as_running(config: Any) -> Iterator[Run | None]:
    """Hold the instance lock and record this process as RUNNING until the block ends;
    yields None (and records nothing) when another process holds the lock."""
    folder = config.folder
    lock = take_lock(folder)
    if lock is None:
        yield None
        return
    run = Run()
    try:
        pid = os.getpid()
        created, since_boot = process_create_time(pid), process_since_boot(pid)
        record = new_record(__version__)
        record.update(state=State.RUNNING.value, foreground=True,
                      supervisor_pid=pid, supervisor_create_time=created,
                      supervisor_since_boot=since_boot,
                      worker_pid=pid, worker_create_time=created, worker_since_boot=since_boot,
                      host=config.host, port=config.port, started_at=int(time.time()))
        write_record(folder, record)
        try:
            yield run
        finally:
            record.update(state=State.STOPPED.value, supervisor_pid=None,
                          supervisor_create_time=None, supervisor_since_boot=None,
                          worker_pid=None, worker_create_time=None, worker_since_boot=None,
                          last_exit_code=run.exit_code)
            with contextlib.suppress(OSError):
                write_record(folder, record)
    finally:
        os.close(lock)
