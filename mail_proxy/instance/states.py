"""Supervisor states, the ``supervisor.json`` record, and liveness by pid plus create time.

A pid alone is never trusted (cli.md §9.4): pids are reused, so a record is alive only when a
process with that pid exists *and* started at the recorded time.
"""

from __future__ import annotations

import enum
import json
import os
import time
from pathlib import Path
from typing import Any

STATE_FILE = "supervisor.json"
CREATE_TIME_TOLERANCE = 0.01


class State(enum.StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FATAL = "FATAL"


# The worker's exit code when its database cannot be reached at start (EX_TEMPFAIL of
# sysexits.h): the supervisor retries it without counting a crash, since waiting is the
# remedy (a PostgreSQL server restarting, a host booting with the database not up yet).
DATABASE_UNREACHABLE_EXIT = 75

# States in which a supervisor process should exist; the others are terminal records.
ACTIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.BACKOFF, State.STOPPING})


def new_record(version: str) -> dict[str, Any]:
    now = int(time.time())
    return {"state": State.STOPPED.value, "version": version,
            "supervisor_pid": None, "supervisor_create_time": None,
            "worker_pid": None, "worker_create_time": None,
            "host": None, "port": None, "started_at": None, "updated_at": now,
            "restarts": 0, "recent_crashes": [], "last_exit_code": None}


def read_record(folder: Path) -> dict[str, Any] | None:
    """The recorded state, or None when there is none or it cannot be parsed."""
    try:
        data = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Replace the state file atomically so readers never see half a document."""
    record["updated_at"] = int(time.time())
    path = folder / STATE_FILE
    tmp = folder / f".{STATE_FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a record either
        raise


def process_create_time(pid: int) -> float | None:
    import psutil  # imported here: `mail-proxy --help` must not pay for it

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, ValueError):
        return None


def process_since_boot(pid: int) -> float | None:
    """Seconds from boot to the start of ``pid``, from the kernel's tick count (Linux;
    None elsewhere). Unlike ``create_time``, which psutil derives from the wall clock's idea
    of the boot time, it does not move when the clock is stepped: a step of a few seconds
    made every running instance look stale to ``list`` and ``stop``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def is_alive(pid: Any, create_time: Any, since_boot: Any = None) -> bool:
    """Whether ``pid`` is still the process that was recorded: by its start since boot when
    the record has it and this system tells it, else by its creation time."""
    if not isinstance(pid, int) or pid <= 0 or not isinstance(create_time, int | float):
        return False
    recorded = since_boot if isinstance(since_boot, int | float) else None
    started = process_since_boot(pid) if recorded is not None else None
    if started is not None and recorded is not None:
        if abs(started - float(recorded)) > CREATE_TIME_TOLERANCE:
            return False
    else:
        actual = process_create_time(pid)
        if actual is None or abs(actual - float(create_time)) > CREATE_TIME_TOLERANCE:
            return False
    import psutil

    try:  # a zombie has exited already; only its parent has not collected it yet
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def supervisor_alive(record: dict[str, Any] | None) -> bool:
    if not record:
        return False
    return is_alive(record.get("supervisor_pid"), record.get("supervisor_create_time"),
                    record.get("supervisor_since_boot"))


def worker_alive(record: dict[str, Any] | None) -> bool:
    if not record:
        return False
    return is_alive(record.get("worker_pid"), record.get("worker_create_time"),
                    record.get("worker_since_boot"))


def recorded_state(record: dict[str, Any] | None) -> State | None:
    """The state a record names, or None when it names none (a hand edit may hold a list,
    which is not even hashable)."""
    raw = (record or {}).get("state")
    if not isinstance(raw, str):
        return None
    try:
        return State(raw)
    except ValueError:
        return None


def effective_state(record: dict[str, Any] | None) -> tuple[State, bool]:
    """(state to show, stale): an active record whose supervisor is gone shows as STOPPED."""
    if not record:
        return State.STOPPED, False
    raw = record.get("state")
    if raw is None:  # State(None) would raise ValueError just the same
        return State.STOPPED, True
    try:
        state = State(raw)
    except ValueError:
        return State.STOPPED, True
    if state in ACTIVE_STATES and not supervisor_alive(record):
        return State.STOPPED, True
    return state, False
