"""Stopping instances from the CLI side (cli.md §9.3): drain through the supervisor, kill
with --force, and stop a worker whose supervisor was killed.

Functions report through ``out`` and ``err`` as :mod:`mail_proxy.instance.control` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mail_proxy.errors import ConfigurationError, MailProxyError, OperationFailed
from mail_proxy.instance import paths
from mail_proxy.instance.config import DEFAULT_SHUTDOWN_TIMEOUT, resolve_process_config
from mail_proxy.instance.states import (
    ACTIVE_STATES,
    STATE_FILE,
    State,
    is_alive,
    read_record,
    recorded_state,
    supervisor_alive,
    write_record,
)

Say = Callable[[str], None]
POLL = 0.1


def _wait_gone(record: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while supervisor_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _kill(pid: object, create_time: object) -> None:
    if is_alive(pid, create_time):
        try:
            os.kill(int(pid), signal.SIGKILL)  # type: ignore[call-overload]
        except ProcessLookupError:
            pass


def _stop_orphan(name: str, record: dict, timeout: float | None, force: bool,
                 err: Say) -> bool:
    """A worker whose supervisor was killed drains and exits on its own within a few
    seconds; ``stop`` meanwhile said "not running" and forgot its pid while it still served
    (a ``start`` then found the port in use). Stop it as the supervisor would have."""
    pid, created = record.get("worker_pid"), record.get("worker_create_time")
    since_boot = record.get("worker_since_boot")
    if not is_alive(pid, created, since_boot):
        return False
    err(f"the supervisor of '{name}' is gone; stopping its worker {pid}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGTERM)  # type: ignore[arg-type]
    deadline = time.monotonic() + (_stop_timeout(name, err, record) if timeout is None
                                   else timeout)
    while is_alive(pid, created, since_boot) and time.monotonic() < deadline:
        time.sleep(POLL)
    if is_alive(pid, created, since_boot):
        if not force:
            raise OperationFailed(f"the worker of '{name}' is still draining; use --force "
                                  "to kill it")
        _kill(pid, created)
    return True


def stop(name: str, *, timeout: float | None = None, force: bool = False,
         out: Say, err: Say) -> int:
    folder = paths.existing_instance(name)
    record = read_record(folder)
    if not supervisor_alive(record):
        stopped = record is not None and _stop_orphan(name, record, timeout, force, err)
        if record is not None and (stopped or recorded_state(record) in ACTIVE_STATES):
            record.update(state=State.STOPPED.value, worker_pid=None, worker_create_time=None)
            with paths.os_errors("write", folder / STATE_FILE):
                write_record(folder, record)  # forget a stale record of a killed supervisor
        out("stopped" if stopped else f"mail-proxy '{name}' is not running")
        return 0
    assert record is not None
    if timeout is None:
        timeout = _stop_timeout(name, err, record)
    try:
        os.kill(record["supervisor_pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    if _wait_gone(record, timeout):
        out("stopped")
        return 0
    if not force:
        raise OperationFailed(f"instance '{name}' is still draining; use --force to kill it")
    _kill(record.get("worker_pid"), record.get("worker_create_time"))
    _kill(record.get("supervisor_pid"), record.get("supervisor_create_time"))
    _wait_gone(record, 5)
    fresh = read_record(folder) or record
    fresh.update(state=State.STOPPED.value, worker_pid=None, worker_create_time=None)
    write_record(folder, fresh)
    err("warning: killed; interrupted sends will be recovered when their leases expire")
    out("stopped")
    return 0


def running_instances() -> list[str]:
    return [n for n in paths.instance_names()
            if supervisor_alive(read_record(paths.instance_dir(n)))]


def _stop_timeout(name: str, err: Say, record: dict | None = None) -> float:
    """shutdown_timeout + 15 s: the value the running supervisor started with (a value set
    since applies at the next start; waiting for it instead said "still draining; use
    --force" to a worker still within its budget), else config.toml's. A config.toml edited
    badly since the start must not make a running instance impossible to stop, so it falls
    back to the default budget."""
    recorded = (record or {}).get("shutdown_timeout")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded >= 0:
        return float(recorded) + 15
    try:
        return resolve_process_config(name, need_token=False).shutdown_timeout + 15
    except ConfigurationError as exc:
        err(f"warning: {exc.message}; waiting {DEFAULT_SHUTDOWN_TIMEOUT + 15:g} s")
        return DEFAULT_SHUTDOWN_TIMEOUT + 15


def stop_all(*, timeout: float | None, force: bool, out: Say, err: Say) -> int:
    names = running_instances()
    if not names:
        out("no instance is running")
        return 0

    def one(name: str) -> tuple[str, str | None]:
        lines: list[str] = []
        try:
            stop(name, timeout=timeout, force=force, out=lines.append, err=lines.append)
        except MailProxyError as exc:
            return name, exc.message
        return name, None

    failed = False
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        for name, problem in pool.map(one, names):
            if problem:
                failed = True
                err(f"error: {problem}")
            else:
                out(f"{name}: stopped")
    return 1 if failed else 0
