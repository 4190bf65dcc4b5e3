"""Shared pieces of the benchmarks: sinks, a worker subprocess, statistics, output.

Everything listens on 127.0.0.1 only. Each benchmark builds its own throw-away instance in a
temporary directory on the same disk as the working directory, so the fsync cost measured by
``fsync_cost`` is the one the worker pays.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKEN = "bench-token-" + "x" * 24
SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink"
                                          if os.path.exists("/usr/sbin/smtp-sink") else None)


# statistics and output ---------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 1,000 samples is the 990th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3),
            "p95_ms": round(percentile(ms, 95), 3), "p99_ms": round(percentile(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "max_ms": round(max(ms), 3)}


def emit(name: str, result: dict[str, Any], *, quiet: bool = False) -> None:
    """One JSON line (machine-readable, prefixed so run_all can find it) and a table."""
    print("BENCH-JSON " + json.dumps({"bench": name, **result}, sort_keys=True), flush=True)
    if not quiet:
        print(table(name, result), flush=True)


def table(title: str, result: dict[str, Any]) -> str:
    rows = list(_flatten(result))
    width = max((len(k) for k, _ in rows), default=10)
    lines = [f"== {title} =="] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, str(obj)


def machine() -> dict[str, Any]:
    import platform

    import psutil

    return {"nproc": os.cpu_count(), "mem_total_gb": round(psutil.virtual_memory().total / 2**30,
                                                           1),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine()}


# ports and processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Sink:
    kind: str  # "smtp-sink" (Postfix) or "python" (bench/sink.py)
    port: int
    proc: subprocess.Popen[Any] = field(repr=False)


@contextmanager
def smtp_sink(kind: str = "auto") -> Iterator[Sink]:
    """A fast SMTP sink in its own process: Postfix's smtp-sink when installed."""
    if kind == "auto":
        kind = "smtp-sink" if SMTP_SINK else "python"
    port = free_port()
    if kind == "smtp-sink":
        if not SMTP_SINK:
            raise RuntimeError("smtp-sink is not installed (apt-get install postfix)")
        # -u: the user to run as when started by root; 1000: listen backlog
        cmd = [SMTP_SINK, "-u", "nobody", f"{HOST}:{port}", "1000"]
        proc: subprocess.Popen[Any] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.DEVNULL)
    else:
        proc = subprocess.Popen([sys.executable, "-m", "bench.sink", str(port)], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        yield Sink(kind, port, proc)
    finally:
        stop_process(proc)


@contextmanager
def delayed(sink: Sink, rtt_ms: float) -> Iterator[Sink]:
    """``sink`` behind bench/delay.py: every round trip to it takes ``rtt_ms`` more."""
    port = free_port()
    proc: subprocess.Popen[Any] = subprocess.Popen(
        [sys.executable, "-m", "bench.delay", str(port), str(sink.port), str(rtt_ms / 2)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        yield Sink(f"{sink.kind}, {rtt_ms:g} ms round trip", port, proc)
    finally:
        stop_process(proc)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class WorkerProcess:
    """`python -m mail_proxy serve` on a throw-away SQLite file, configured by environment."""

    folder: Path
    port: int
    key: str
    proc: subprocess.Popen[Any] | None = None
    profiler: subprocess.Popen[Any] | None = None
    db_url: str | None = None  # a PostgreSQL URL instead of the SQLite file

    @property
    def db_path(self) -> Path:
        return self.folder / "mail_service.db"

    @property
    def database(self) -> str:
        """The database as ``Core.open`` and ``wait_sent`` take it."""
        return self.db_url or f"sqlite://{self.db_path}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("GMP_DB_URL", None)
        env.pop("GMP_DB_PATH", None)
        database = {"GMP_DB_URL": self.db_url} if self.db_url else \
            {"GMP_DB_PATH": str(self.db_path)}
        env.update({**database, "GMP_API_TOKEN": TOKEN,
                    "MAIL_PROXY_ENCRYPTION_KEY": self.key, "GMP_PORT": str(self.port),
                    "GMP_HOST": HOST, "GMP_INSTANCE": "bench", "GMP_LOG_LEVEL": "warning",
                    "MAIL_PROXY_HOME": str(self.folder / "home"),
                    "GMP_CACHE_DIR": str(self.folder / "cache")})
        return env

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mail_proxy", "serve"], cwd=REPO,
                                     env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "worker.log", "ab"))  # noqa: SIM115
        try:
            wait_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError("worker did not start: "
                               + (self.folder / "worker.log").read_text()[-2000:]) from None
        out = os.environ.get("BENCH_PYSPY")
        if out and shutil.which("py-spy"):
            # profile the worker for the whole benchmark: BENCH_PYSPY=/tmp/flame.svg
            self.profiler = subprocess.Popen(
                ["py-spy", "record", "-o", out, "--pid", str(self.proc.pid),
                 "-r", os.environ.get("BENCH_PYSPY_RATE", "200"),
                 *os.environ.get("BENCH_PYSPY_ARGS", "").split()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)

    def rss_mb(self) -> float:
        import psutil

        assert self.proc is not None
        return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the worker so far, all threads."""
        import psutil

        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def thread_cpu_seconds(self) -> dict[int, float]:
        import psutil

        assert self.proc is not None
        return {t.id: t.user_time + t.system_time
                for t in psutil.Process(self.proc.pid).threads()}

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            self.profiler.wait(30)
        if self.proc is not None:
            stop_process(self.proc, timeout=40)


@contextmanager
def workdir(base: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mail-proxy-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def prepare_instance(database: Path | str, key: str, smtp_port: int, *,
                           max_connections: int = 3, batch_size: int | None = None,
                           accounts: int = 1, settings: dict[str, Any] | None = None) -> None:
    """Create tenant ``acme`` and accounts ``main``, ``a1``... through the manager layer."""
    from mail_proxy.manager import accounts as accounts_mod
    from mail_proxy.manager import tenants
    from mail_proxy.manager.core import ADMIN, Core
    from mail_proxy.manager.instance import patch_settings
    from mail_proxy.security.crypto import KeyRing

    url = f"sqlite://{database}" if isinstance(database, Path) else database
    core = await Core.open(url, KeyRing([base64.b64decode(key)]))
    try:
        if settings:
            await patch_settings(core, settings)
        await tenants.put_tenant(core, {"id": "acme"}, ADMIN)
        for i in range(accounts):
            body: dict[str, Any] = {"id": "main" if i == 0 else f"a{i}", "tenant_id": "acme",
                                    "host": HOST, "port": smtp_port, "tls_mode": "none",
                                    "max_connections": max_connections}
            if batch_size is not None:
                body["batch_size"] = batch_size
            await accounts_mod.put_account(core, body, ADMIN, "acme")
    finally:
        await core.close()


def message(i: int | str, size: int = 1024, account: str | None = None) -> dict[str, Any]:
    """A message whose body makes it about ``size`` bytes on the wire."""
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40)[:max(size - 300, 1)]
    msg: dict[str, Any] = {"id": f"b-{i}", "from": "Sender <sender@acme.test>",
                           "to": [f"rcpt{i}@example.com"], "subject": f"Bench {i}", "body": body}
    if account:
        msg["account_id"] = account
    return msg


# the durable-commit floor ----------------------------------------------------------------
def fsync_cost(folder: Path, commits: int = 100) -> dict[str, float]:
    """Time of one durable SQLite commit (WAL, synchronous=FULL) of one small row."""
    path = folder / "fsync-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        samples = []
        for i in range(commits + 5):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200 + str(i),))
            conn.execute("COMMIT")
            if i >= 5:  # the first commits also create the WAL file
                samples.append(time.perf_counter() - t0)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    s = latency_summary(samples)
    return {"p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "mean_ms": s["mean_ms"], "n": s["n"]}


def wait_sent(database: Path | str, total: int, timeout: float) -> float:
    """Poll (read-only, outside the worker) until ``total`` messages are sent; monotonic end.

    ``database`` is the SQLite file or a PostgreSQL URL (``?schema=`` honoured)."""
    if isinstance(database, str) and database.startswith("postgres"):
        return run(_wait_sent_pg(database, total, timeout))
    path = str(database).removeprefix("sqlite://")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = conn.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()[0]
            if n >= total:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {total} messages sent after {timeout} s")
            time.sleep(0.01)
    finally:
        conn.close()


async def _wait_sent_pg(url: str, total: int, timeout: float) -> float:
    import asyncpg

    base, schema = split_schema(url)
    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
            if n >= total:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {total} messages sent after {timeout} s")
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def split_schema(url: str) -> tuple[str, str]:
    """``postgresql://...?schema=s`` -> (the URL without it, ``s``)."""
    base, _, query = url.partition("?")
    params = [p for p in query.split("&") if p]
    schema = next((p.split("=", 1)[1] for p in params if p.startswith("schema=")), "public")
    rest = "&".join(p for p in params if not p.startswith("schema="))
    return (f"{base}?{rest}" if rest else base), schema


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server at ``base``, dropped afterwards: its URL."""
    import asyncpg

    schema = f"mp_bench_{os.urandom(5).hex()}"
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}schema={schema}"
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(base, timeout=5)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        run(drop())


class RawHttp:
    """A bare HTTP/1.1 keep-alive client: measures the server, not a client library."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.port = port
        self.head = (f"Host: {HOST}:{port}\r\nX-API-Token: {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                          + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


async def serve_until_stopped(server: asyncio.AbstractServer) -> None:
    """For the helper processes (sink, relay): say ``ready``, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def run(coro: Any) -> Any:
    """asyncio.run, on uvloop when installed (the client must not be the bottleneck)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
