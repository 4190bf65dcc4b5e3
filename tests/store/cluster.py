"""Several `mail-proxy serve` workers on one PostgreSQL schema, and a sink counting Message-IDs.

Used by tests/acceptance/test_postgres_cluster.py and bench/postgres_scaling.py.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mail_proxy.manager.core import Core
from mail_proxy.manager.instance import patch_settings
from mail_proxy.security.crypto import KeyRing, generate_key
from tests.support import factories as f
from tests.support.smtp_server import SinkServer

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


class CountingSink(SinkServer):
    """The fast sink, recording the Message-ID of every accepted message."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: collections.Counter[str] = collections.Counter()
        self.times: list[float] = []

    def on_message(self, data: bytes) -> None:
        super().on_message(data)
        for line in data.split(b"\r\n"):
            if line[:11].lower() == b"message-id:":
                self.ids[line[11:].strip().decode("ascii", "replace")] += 1
                break
        else:
            self.ids["<none>"] += 1
        self.times.append(time.time())

    @property
    def received(self) -> int:
        return len(self.times)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.ids.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def prepare(url: str, keyring: KeyRing, sink_port: int, messages: int, *,
                  settings: dict[str, Any] | None = None, **account: Any) -> float:
    """One tenant, one account on the sink, ``messages`` queued messages; returns the
    seconds the enqueue took (add-messages in batches of 1,000, four at a time)."""
    core = await Core.open(url, keyring, name="bench")
    try:
        if settings:
            await patch_settings(core, settings)
        await f.tenant(core)
        await f.account(core, sink_port, **account)
        batches = [[f.message(i) for i in range(start, min(start + 1000, messages))]
                   for start in range(0, messages, 1000)]
        started = time.perf_counter()
        for group in range(0, len(batches), 4):  # a few API-sized batches at a time
            await asyncio.gather(*[f.enqueue(core, *b) for b in batches[group:group + 4]])
        return time.perf_counter() - started
    finally:
        await core.close()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)


def start_workers(n: int, url: str, keyring: KeyRing, folder: Path) -> list[Worker]:
    workers = []
    key = ",".join(base64.b64encode(k).decode() for k in keyring.keys())  # noqa: SIM118 (a method)
    for i in range(n):
        port = free_port()
        env = {**os.environ, "GMP_DB_URL": url, "GMP_API_TOKEN": "t" * 32,
               "MAIL_PROXY_ENCRYPTION_KEY": key, "GMP_PORT": str(port), "GMP_HOST": HOST,
               "GMP_LOG_LEVEL": "warning", "MAIL_PROXY_HOME": str(folder / f"home{i}"),
               "GMP_CACHE_DIR": str(folder / f"cache{i}"),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("GMP_DB_PATH", None)
        log = (folder / f"worker{i}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "mail_proxy", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(folder))
        workers.append(Worker(proc, port, log))
    return workers


async def stop_workers(workers: list[Worker], timeout: float = 20.0) -> None:
    for w in workers:
        w.kill(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(w.proc.wait, max(deadline - time.monotonic(), 0.1))
        if w.proc.poll() is None:
            w.kill(signal.SIGKILL)
            await asyncio.to_thread(w.proc.wait)
        w.log.close()


async def wait_for(sink: CountingSink, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(sink.ids) >= target:
            return True
        await asyncio.sleep(0.1)
    return False


def new_keyring() -> KeyRing:
    return KeyRing([generate_key()], source="env")
