"""A real tenant application for report tests: Starlette served by uvicorn on 127.0.0.1.

It records every call (raw body, headers, parsed entries, whether the signature verified)
and answers as scripted::

    async with Receiver(secret="s" * 32) as rx:
        rx.script(Reply(status=500), Reply(error=["m-1"], queued=2))
        ...
        await rx.wait_calls(3)
        assert rx.calls[0].signature_ok

Scripted replies are used in order; afterwards ``rx.default`` answers. A reply with a delay
sleeps before answering (a hanging tenant); closing the receiver releases sleepers at once.
The signature is checked here with code written independently of mail_proxy.reports.signing,
straight from reports.md §3, so that a bug there cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOST = "127.0.0.1"


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    ok: bool = True
    queued: Any = None
    next_sync_after: Any = None
    error: Any = None
    not_found: Any = None
    raw: bytes | None = None  # sent as is instead of the JSON answer

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        out: dict[str, Any] = {"ok": self.ok}
        for key in ("queued", "next_sync_after", "error", "not_found"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return json.dumps(out).encode()


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    raw: bytes
    entries: list[dict[str, Any]]
    signature_ok: bool | None  # None when the receiver has no secret
    received_at: float  # time.monotonic()
    reply: Reply = field(default_factory=Reply)


def check_signature(secret: str, header: str | None, raw: bytes, tolerance: int = 300) -> bool:
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for piece in header.split(","):
        if "=" in piece:
            name, value = piece.split("=", 1)
            fields.setdefault(name.strip(), []).append(value.strip())
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs(time.time() - int(stamps[0])) > tolerance:
        return False
    want = hmac.new(secret.encode(), stamps[0].encode() + b"." + raw, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, given) for given in fields.get("v1", []))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


class Receiver:
    def __init__(self, secret: str | None = None, path: str = "/mail-proxy/sync") -> None:
        self.secret = secret
        self.path = path
        self.calls: list[Call] = []
        self.default = Reply()
        self._script: list[Reply] = []
        self._closing = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for c in self.calls for e in c.entries]

    async def wait_calls(self, n: int, timeout: float = 5.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} calls, got {len(self.calls)}")
            await asyncio.sleep(0.01)
        return self.calls

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            entries = json.loads(raw)["delivery_report"]
        except (ValueError, KeyError, TypeError):
            entries = []
        ok = None if self.secret is None else check_signature(
            self.secret, request.headers.get("x-mail-proxy-signature"), raw)
        reply = self._script.pop(0) if self._script else self.default
        self.calls.append(Call(path=request.url.path, headers=dict(request.headers), raw=raw,
                               entries=entries, signature_ok=ok,
                               received_at=time.monotonic(), reply=reply))
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        return Response(reply.body(), status_code=reply.status,
                        media_type="application/json")

    async def __aenter__(self) -> Receiver:
        app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, server_header=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + 5
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._task, 5)
        self._sock.close()


# -- helpers shared by the report tests ------------------------------------------------------

def configure(core: Any, **changes: Any) -> None:
    """Change runtime settings in memory (the reporter reads ``core.settings`` each time)."""
    import dataclasses

    core.settings = dataclasses.replace(core.settings, **changes)


async def deliver(core: Any, smtp_port: int, *messages: dict[str, Any],
                  tenant_id: str = "acme", timeout: float = 10.0) -> None:
    """Enqueue and send through the real dispatcher until nothing is left in flight."""
    from mail_proxy.delivery.dispatcher import Dispatcher
    from mail_proxy.delivery.smtp import SmtpPools
    from tests.support import factories as f

    await f.enqueue(core, *messages, tenant_id=tenant_id)
    dispatcher = Dispatcher(core, owner="test:dispatch", smtp=SmtpPools(ehlo_name="test.local"))
    deadline = time.monotonic() + timeout
    try:
        while True:
            claimed = await dispatcher.run_once()
            await asyncio.sleep(0.01)
            if claimed == 0 and dispatcher.held == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError("dispatcher did not settle")
    finally:
        await dispatcher.smtp.close()


async def rows(core: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Read the test database directly, for assertions on columns no query exposes."""
    import aiosqlite

    async with aiosqlite.connect(core.store.path) as db:
        db.row_factory = lambda cur, r: {d[0]: v for d, v in zip(cur.description, r,
                                                                 strict=True)}
        return list(await db.execute_fetchall(sql, args))
