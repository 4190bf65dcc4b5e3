"""Real instances for acceptance tests: the installed CLI in subprocesses, state from disk.

``Daemon.create()`` makes the instance folder (as ``mail-proxy start`` would on first use),
``configure()`` writes settings, tenants and accounts through a ``Core`` opened on the
instance's SQLite file, and ``start()``/``stop()`` drive the real ``mail-proxy`` command,
so the supervisor, the worker and their signals are the production ones. Every helper is
synchronous: tests call subprocesses and sleep, which must not happen on an event loop.

``RestartableSmtp`` is an aiosmtpd server in a thread that can go down and come back on the
same port, counting deliveries per ``X-Mail-Proxy-ID`` across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from mail_proxy.instance import paths
from mail_proxy.instance.config import create_instance, read_toml, write_toml
from mail_proxy.instance.states import is_alive, read_record

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], limit: float, what: str = "condition",
             every: float = 0.1) -> float:
    """Poll ``check`` until true; returns the seconds waited, fails after ``limit``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"{what} not reached within {limit:g} s")
        time.sleep(every)
    return time.monotonic() - started


def message(i: int | str, **fields: Any) -> dict[str, Any]:
    return {"id": f"m-{i}", "from": "Sender <sender@acme.test>", "to": [f"rcpt{i}@example.com"],
            "subject": f"Message {i}", "body": f"Hello {i}", **fields}


class Daemon:
    """One named instance under the test's MAIL_PROXY_HOME, driven through the CLI."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = paths.instance_dir(name)
        config = read_toml(self.folder)
        self.port = int(config["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = (self.folder / "api_token").read_text().strip()
        self.db_path = self.folder / "mail_service.db"

    @classmethod
    def create(cls, name: str = "rel", *, shutdown_timeout: float = 10) -> Daemon:
        create_instance(name, "127.0.0.1", free_port(), None)
        folder = paths.instance_dir(name)
        config = read_toml(folder)
        config["shutdown_timeout"] = shutdown_timeout
        write_toml(folder, config)
        return cls(name)

    # -- configuration through the manager layer ---------------------------------------
    def configure(self, *, settings: dict[str, Any] | None = None,
                  tenants: Iterable[dict[str, Any]] = (),
                  accounts: Iterable[dict[str, Any]] = ()) -> None:
        asyncio.run(self._configure(settings or {}, list(tenants), list(accounts)))

    async def _configure(self, settings: dict[str, Any], tenants: list[dict[str, Any]],
                         accounts: list[dict[str, Any]]) -> None:
        from mail_proxy.manager import accounts as account_ops
        from mail_proxy.manager import instance as instance_ops
        from mail_proxy.manager import tenants as tenant_ops
        from mail_proxy.manager.core import ADMIN, Core
        from mail_proxy.security.crypto import KeyRing

        keyring = await asyncio.to_thread(KeyRing.load, self.folder)
        core = await Core.open(f"sqlite://{self.db_path}", keyring, name=self.name)
        try:
            if settings:
                await instance_ops.patch_settings(core, settings)
            for body in tenants:
                await tenant_ops.put_tenant(core, body, ADMIN)
            for body in accounts:
                await account_ops.put_account(core, {"host": "127.0.0.1", "tls_mode": "none",
                                                     **body}, ADMIN, body["tenant_id"])
        finally:
            await core.close()

    # -- the CLI -----------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "mail_proxy", *args], capture_output=True,
                              text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, wait: float = 30) -> subprocess.CompletedProcess[str]:
        r = self.cli("start", self.name, "--wait", str(wait), timeout=wait + 15)
        assert r.returncode == 0, f"start failed ({r.returncode}): {r.stdout}{r.stderr}"
        return r

    def stop(self, *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        args = ["stop", self.name] + (["--timeout", str(timeout)] if timeout else [])
        return self.cli(*args, timeout=(timeout or 60) + 15)

    # -- processes ---------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return read_record(self.folder) or {}

    def worker(self) -> psutil.Process:
        rec = self.record()
        assert is_alive(rec.get("worker_pid"), rec.get("worker_create_time")), rec
        return psutil.Process(rec["worker_pid"])

    def kill(self, *kinds: str) -> None:
        """SIGKILL the recorded worker and/or supervisor (only if alive by pid+create time)."""
        rec = self.record()
        for kind in kinds:
            pid, created = rec.get(f"{kind}_pid"), rec.get(f"{kind}_create_time")
            if is_alive(pid, created):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)  # type: ignore[arg-type]
        for kind in kinds:  # every thread gone before the caller goes on
            pid, created = rec.get(f"{kind}_pid"), rec.get(f"{kind}_create_time")
            wait_for(lambda p=pid, c=created: gone(p, c), 10, f"{kind} gone")

    def cleanup(self) -> None:
        """Never leave a process behind, whatever the test did."""
        if self.record().get("supervisor_pid"):
            self.kill("worker", "supervisor")

    def log_text(self) -> str:
        parts = []
        for name in ("mail-proxy.log", "supervisor.log"):
            with contextlib.suppress(OSError):
                parts.append((self.folder / "logs" / name).read_text(errors="replace"))
        return "\n".join(parts)

    # -- HTTP --------------------------------------------------------------------------
    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Token": self.token},
                            timeout=timeout)

    def enqueue(self, client: httpx.Client, msgs: list[dict[str, Any]],
                tenant_id: str = "acme") -> httpx.Response:
        return client.post("/commands/add-messages",
                           json={"tenant_id": tenant_id, "messages": msgs})

    # -- database, read directly ---------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # Read-write (though it only reads): after a kill -9 the WAL index may need rebuilding,
        # and a read-only connection would read an older snapshot than the worker sees.
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def counts(self) -> Counter[str]:
        return Counter(dict(self.query("SELECT status, count(*) FROM messages GROUP BY status")))

    def events(self, event_type: str) -> int:
        rows = self.query("SELECT count(DISTINCT message_pk) FROM message_events "
                          "WHERE event_type = ?", (event_type,))
        return int(rows[0][0])


def gone(pid: Any, created: Any) -> bool:
    """Dead with every thread: a killed process's main thread can show as a zombie while
    another thread (aiosqlite's) still finishes a write and holds the database's locks."""
    if is_alive(pid, created):
        return False
    try:
        return len(os.listdir(f"/proc/{int(pid)}/task")) <= 1
    except (OSError, TypeError, ValueError):
        return True


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        data = bytes(envelope.content or b"")
        message_id = email.message_from_bytes(data).get("X-Mail-Proxy-ID", "")
        with self.lock:
            self.ids[message_id] += 1
        return "250 2.0.0 OK"


class RestartableSmtp:
    """aiosmtpd in a thread on a fixed port; ``down()`` and ``up()`` keep the counts."""

    def __init__(self) -> None:
        self.port = free_port()
        self._recorder = _Recorder()
        self._controller: Controller | None = None

    @property
    def ids(self) -> Counter[str]:
        with self._recorder.lock:
            return Counter(self._recorder.ids)

    @property
    def total(self) -> int:
        with self._recorder.lock:
            return sum(self._recorder.ids.values())

    def up(self) -> None:
        # A fresh controller each time: a stopped one cannot be started again.
        self._controller = Controller(self._recorder, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> RestartableSmtp:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def duplicates(ids: Counter[str]) -> int:
    return sum(n - 1 for n in ids.values() if n > 1)


def figures(case: str, **values: Any) -> None:
    """Print one line of figures (shown with -s or in the -ra summary) and keep it on disk."""
    line = json.dumps({"case": case, **values}, sort_keys=True)
    print(f"FIGURES {line}")
    target = os.environ.get("MAIL_PROXY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
