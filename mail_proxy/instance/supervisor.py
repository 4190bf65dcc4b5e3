"""The supervisor: the daemon parent that spawns, watches and restarts one worker.

Run as ``python -m mail_proxy.instance.supervisor NAME [--foreground]``; ``mail-proxy start``
launches it detached (cli.md §9). Only the stdlib and psutil are used here: the supervisor
stays small and never imports the web stack it supervises.

Life cycle (states.py)::

    STARTING --/health 200--> RUNNING --exit / 3 failed checks--> BACKOFF --delay--> STARTING
        |                        |                                  (5th crash in 60 s: FATAL;
        |                        |                                   exit 75, database not
        |                        |                                   reachable, is no crash)
        +------ SIGTERM/SIGINT --+--> STOPPING --worker gone--> STOPPED
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mail_proxy import __version__
from mail_proxy.errors import MailProxyError
from mail_proxy.instance import paths
from mail_proxy.instance.config import probe_host, resolve_process_config
from mail_proxy.instance.logs import reopen_files, supervisor_logger
from mail_proxy.instance.states import (
    DATABASE_UNREACHABLE_EXIT,
    STATE_FILE,
    State,
    new_record,
    process_create_time,
    process_since_boot,
    write_record,
)

BACKOFF_STEPS = (1, 2, 4, 8, 16, 30)
READY_INTERVAL = 0.5
READY_LIMIT = 30.0
HEALTH_INTERVAL = 10.0
HEALTH_TIMEOUT = 5.0
HEALTH_FAILURES = 3
STABLE_AFTER = 60.0
CRASH_WINDOW = 60.0
MAX_CRASHES = 5
KILL_GRACE = 10.0
LOCK_FILE = "supervisor.lock"
SUPERVISOR_PID_ENV = "MAIL_PROXY_SUPERVISOR_PID"
# Test and embedding hooks: a JSON argv list for the worker ({name}, {host}, {port}, {folder}
# are substituted), and a factor applied to the backoff delays.
WORKER_ARGV_ENV = "MAIL_PROXY_WORKER_ARGV"
BACKOFF_SCALE_ENV = "MAIL_PROXY_BACKOFF_SCALE"


async def http_status(host: str, port: int, path: str = "/health",
                      limit: float = HEALTH_TIMEOUT) -> int | None:
    """The HTTP status of ``GET path``, or None when there is no usable answer in time."""
    writer = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(probe_host(host), port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode("ascii"))
            await writer.drain()
            line = await reader.readline()
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/"):
            return int(parts[1])
        return None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()


class Supervisor:
    def __init__(self, name: str, folder: Path, worker_argv: list[str], *, host: str,
                 port: int, shutdown_timeout: float, logger: logging.Logger,
                 backoff_scale: float = 1.0) -> None:
        self.name, self.folder, self.worker_argv = name, folder, worker_argv
        self.host, self.port, self.shutdown_timeout = host, port, shutdown_timeout
        self.log, self.backoff_scale = logger, backoff_scale
        self.stop_event = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.step = 0
        self.record: dict[str, Any] = new_record(__version__)

    # -- state file --------------------------------------------------------------------
    def set_state(self, state: State, **fields: Any) -> None:
        self.record.update(fields)
        self.record["state"] = state.value
        try:
            write_record(self.folder, self.record)
        except OSError as exc:
            # A full disk must not take the supervisor down with it: nothing would restart
            # the worker once space is back (durability verification: after a crash on a
            # full disk the instance stayed down). The next state written catches up.
            self.log.warning("cannot write %s (%s); supervising on", STATE_FILE, exc)
        self.log.info("state %s", state.value)

    # -- signals -----------------------------------------------------------------------
    def request_stop(self, signame: str) -> None:
        if not self.stop_event.is_set():
            self.log.info("%s received: stopping", signame)
            self.stop_event.set()

    def forward_hup(self) -> None:
        reopen_files(self.log)
        if self.proc is not None and self.proc.returncode is None:
            self.log.info("SIGHUP received: forwarded to worker %d", self.proc.pid)
            self.proc.send_signal(signal.SIGHUP)

    # -- main loop ---------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.forward_hup)
        self.record.update(supervisor_pid=os.getpid(),
                           supervisor_create_time=process_create_time(os.getpid()),
                           supervisor_since_boot=process_since_boot(os.getpid()),
                           host=self.host, port=self.port, started_at=int(time.time()),
                           # the drain budget in force: `stop` waits for it, not for a value
                           # edited in config.toml since (applied at the next start)
                           shutdown_timeout=self.shutdown_timeout)
        # on disk as soon as we hold the lock, before the worker exists: a concurrent
        # `start` (or one whose supervisor lost the lock to us) must see us alive at once
        # (written quietly: the state STARTING is logged when the worker is spawned)
        self.record["state"] = State.STARTING.value
        write_record(self.folder, self.record)
        try:
            return await self._loop()
        finally:
            if self.proc is not None and self.proc.returncode is None:
                await self.terminate(KILL_GRACE)

    async def _loop(self) -> int:
        while not self.stop_event.is_set():
            requested = await self.run_worker_once()
            if requested or self.stop_event.is_set():
                break
            now = time.time()
            crashes = [t for t in self.record["recent_crashes"] if now - t < CRASH_WINDOW]
            waiting = self.record["last_exit_code"] == DATABASE_UNREACHABLE_EXIT
            if not waiting:
                crashes.append(now)
            if len(crashes) >= MAX_CRASHES:
                self.log.error("%d crashes within %ds: giving up", len(crashes),
                               int(CRASH_WINDOW))
                self.set_state(State.FATAL, recent_crashes=crashes, worker_pid=None,
                               worker_create_time=None, worker_since_boot=None)
                return 1
            delay = BACKOFF_STEPS[min(self.step, len(BACKOFF_STEPS) - 1)] * self.backoff_scale
            self.step += 1
            self.set_state(State.BACKOFF, recent_crashes=crashes, worker_pid=None,
                           worker_create_time=None, worker_since_boot=None)
            if waiting:
                self.log.warning("the worker cannot reach its database: trying again in "
                                 "%.2fs (not counted as a crash)", delay)
            else:
                self.log.info("restarting the worker in %.2fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)
            if not self.stop_event.is_set():
                self.record["restarts"] += 1
        self.set_state(State.STOPPED, worker_pid=None, worker_create_time=None,
                       worker_since_boot=None)
        return 0

    async def spawn(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        # own process group: a Ctrl-C on the terminal reaches only us, and we drive the drain
        proc = await asyncio.create_subprocess_exec(
            *self.worker_argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=self.folder, env=env, process_group=0)
        self.proc = proc
        self.log.info("worker started, pid %d", proc.pid)
        self.set_state(State.STARTING, worker_pid=proc.pid,
                       worker_create_time=process_create_time(proc.pid),
                       worker_since_boot=process_since_boot(proc.pid))
        return proc

    async def pump(self, stream: asyncio.StreamReader | None) -> None:
        """Copy the worker's output into the log, line by line. A line longer than the
        stream's buffer (64 KiB) is logged in pieces: readline() raised on it, this task
        ended, the worker then blocked on a full pipe and its death went unnoticed."""
        if stream is None:
            return
        while True:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                line = end.partial  # the last line without its newline, or b"" at the end
                if not line:
                    return
            except asyncio.LimitOverrunError as over:
                line = await stream.read(over.consumed or PUMP_PIECE)
            self.log.info(line.decode("utf-8", "replace").rstrip("\n"), extra={"raw": True})

    async def run_worker_once(self) -> bool:
        """Run one worker until it crashes (False) or a stop was requested (True)."""
        proc = await self.spawn()
        pump = asyncio.create_task(self.pump(proc.stdout))
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(self.stop_event.wait())
        try:
            return await self._watch(proc, exited, stopping)
        finally:
            stopping.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pump, 2)
            self.record["last_exit_code"] = proc.returncode

    async def _watch(self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int],
                     stopping: asyncio.Task[Any]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_LIMIT
        ready = False
        while not ready:
            if loop.time() >= deadline:
                self.log.error("worker not ready after %ds", int(READY_LIMIT))
                await self.terminate(KILL_GRACE)
                return False
            await asyncio.wait({exited, stopping}, timeout=READY_INTERVAL,
                               return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                await self.drain()
                return True
            if exited.done():
                self.log.error("worker exited with %s before it was ready", proc.returncode)
                return False
            ready = await http_status(self.host, self.port, limit=HEALTH_TIMEOUT) == 200
        self.set_state(State.RUNNING)
        running_since, failures = loop.time(), 0
        while True:
            await asyncio.wait({exited, stopping}, timeout=HEALTH_INTERVAL,
                               return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                await self.drain()
                return True
            if exited.done():
                self.log.error("worker exited with %s", proc.returncode)
                return False
            if loop.time() - running_since >= STABLE_AFTER:
                self.step = 0
            if await http_status(self.host, self.port, limit=HEALTH_TIMEOUT) == 200:
                failures = 0
                continue
            failures += 1
            self.log.warning("health check failed (%d/%d)", failures, HEALTH_FAILURES)
            if failures >= HEALTH_FAILURES:
                await self.terminate(KILL_GRACE)
                return False

    async def drain(self) -> None:
        self.set_state(State.STOPPING)
        await self.terminate(self.shutdown_timeout + KILL_GRACE)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the worker, then SIGKILL it when it is still there after ``grace``."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            self.log.warning("worker %d still running after %.0fs: killing it", proc.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


PUMP_PIECE = 64 * 1024


def worker_argv(name: str, host: str, port: int, folder: Path) -> list[str]:
    raw = os.environ.get(WORKER_ARGV_ENV)
    if not raw:
        # the address this supervisor probes, not config.toml read again: a port changed
        # there while the instance runs would otherwise move a respawned worker away from
        # the health check, which then killed it every 30 s without end
        return [sys.executable, "-m", "mail_proxy", "serve", name, "--host", host,
                "--port", str(port)]
    values = {"name": name, "host": host, "port": str(port), "folder": str(folder)}
    return [str(part).format(**values) for part in json.loads(raw)]


def take_lock(folder: Path) -> int | None:
    """An exclusive lock held for the supervisor's life; None when another one holds it."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def run_supervisor(name: str, *, foreground: bool) -> int:
    os.umask(0o077)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until run() forwards it (see serve)
    try:
        folder = paths.existing_instance(name)
        config = resolve_process_config(name, need_token=False)
    except MailProxyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    os.chdir(folder)
    log = supervisor_logger(folder, to_terminal=foreground)
    lock = take_lock(folder)
    if lock is None:
        log.error("another supervisor holds %s: exiting", LOCK_FILE)
        return 1
    scale = float(os.environ.get(BACKOFF_SCALE_ENV) or 1.0)
    sup = Supervisor(name, folder, worker_argv(name, config.host, config.port, folder),
                     host=config.host, port=config.port,
                     shutdown_timeout=config.shutdown_timeout, logger=log, backoff_scale=scale)
    log.info("supervisor %d for '%s' on %s:%d (mail-proxy %s)", os.getpid(), name,
             config.host, config.port, __version__)
    try:
        return asyncio.run(sup.run())
    except Exception:
        log.exception("supervisor failed")
        sup.set_state(State.FATAL, worker_pid=None, worker_create_time=None,
                      worker_since_boot=None)
        return 1
    finally:
        os.close(lock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-proxy-supervisor")
    parser.add_argument("name")
    parser.add_argument("--foreground", action="store_true")
    args = parser.parse_args(argv)
    return run_supervisor(args.name, foreground=args.foreground)


if __name__ == "__main__":
    sys.exit(main())
