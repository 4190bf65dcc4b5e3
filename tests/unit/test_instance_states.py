"""Liveness of recorded processes (instance/states.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mail_proxy.instance.states import (
    is_alive,
    process_create_time,
    process_since_boot,
    supervisor_alive,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="start ticks are read from /proc")


@linux_only
def test_a_stepped_clock_does_not_make_a_running_process_look_gone() -> None:
    """psutil derives creation times from the wall clock's idea of the boot time: after a
    clock step of a few seconds every running instance looked stale to `list` and `stop`
    (operations hunt of 2026-11-25). The start since boot does not move."""
    pid = os.getpid()
    created, since_boot = process_create_time(pid), process_since_boot(pid)
    assert created is not None and since_boot is not None
    stepped = created + 5.0  # what psutil reports for the same process after a +5 s step
    assert not is_alive(pid, stepped)  # creation time alone: the old, fragile answer
    assert is_alive(pid, stepped, since_boot)
    assert supervisor_alive({"supervisor_pid": pid, "supervisor_create_time": stepped,
                             "supervisor_since_boot": since_boot})
    # another process that got the same pid later has another start since boot
    assert not is_alive(pid, created, since_boot + 1.0)


def test_records_of_older_versions_are_judged_by_creation_time() -> None:
    pid = os.getpid()
    created = process_create_time(pid)
    assert supervisor_alive({"supervisor_pid": pid, "supervisor_create_time": created})
    assert not supervisor_alive({"supervisor_pid": pid, "supervisor_create_time": created - 9})


def test_the_already_running_line_says_what_the_supervisor_is_doing(tmp_path) -> None:
    from types import SimpleNamespace

    from mail_proxy.instance.control import running_line

    config = SimpleNamespace(url="http://127.0.0.1:8000")
    base = {"host": "127.0.0.1", "port": 8100, "supervisor_pid": 10}
    assert running_line("m", config, {**base, "state": "RUNNING", "worker_pid": 11}) == \
        "mail-proxy 'm' is running at http://127.0.0.1:8100 (pid 11)"
    line = running_line("m", config, {**base, "state": "BACKOFF", "worker_pid": None})
    assert line.startswith("mail-proxy 'm' is in BACKOFF (its worker failed")
    assert line.endswith("at http://127.0.0.1:8100 (supervisor pid 10)")
    assert running_line("m", config, {**base, "state": "STARTING"}) == \
        "mail-proxy 'm' is starting at http://127.0.0.1:8100 (supervisor pid 10)"


def test_a_state_the_disk_cannot_take_does_not_stop_the_supervisor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Durability verification: after a worker crash on a full disk, the supervisor's write
    of supervisor.json raised ENOSPC and ended it; nothing restarted the worker later."""
    import errno
    import logging
    import os

    from mail_proxy.instance import states
    from mail_proxy.instance.supervisor import Supervisor

    sup = Supervisor("main", tmp_path, ["true"], host="127.0.0.1", port=1,
                     shutdown_timeout=1, logger=logging.getLogger("test.supervisor"))
    sup.set_state(states.State.RUNNING)
    real_open = os.open

    def full(path: object, *args: object) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(states.os, "open", full)
    with caplog.at_level(logging.WARNING, logger="test.supervisor"):
        sup.set_state(states.State.BACKOFF)  # does not raise
    assert "cannot write supervisor.json" in caplog.text
    monkeypatch.setattr(states.os, "open", real_open)
    assert states.read_record(tmp_path)["state"] == "RUNNING"  # the last one written
    sup.set_state(states.State.RUNNING)
    assert not list(tmp_path.glob(".supervisor.json.*.tmp"))
