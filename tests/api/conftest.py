"""A real worker (uvicorn + dispatcher + API) on a loopback port, run in its own thread and
event loop so that both async httpx tests and synchronous schemathesis can talk to it.

``live`` is module-scoped: one worker per test file, seeded with tenants ``acme`` (own key),
``other`` (a second tenant), ``late`` (expired key) and ``sleepy`` (inactive).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from mail_proxy.instance.config import ProcessConfig
from mail_proxy.security.crypto import KeyRing, generate_key
from mail_proxy.security.tokens import generate_token, hash_api_key

T = TypeVar("T")
ADMIN_TOKEN = "admin-" + generate_token()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    folder: Path
    admin_token: str = ADMIN_TOKEN
    keys: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def start(self) -> None:
        from mail_proxy.server import Worker

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = ProcessConfig(
            name="api-test", folder=None, host="127.0.0.1", port=self.port,
            db_url=f"sqlite://{self.folder / 'mail_service.db'}", log_level="debug",
            log_format="text", shutdown_timeout=2, db_pool_size=4, api_token=self.admin_token,
            cache_dir=self.folder / "cache")
        self.log_path = self.folder / "worker.log"
        # Everything the process logs, at debug level: the secret-leak test reads it.
        self._handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.DEBUG)
        root = logging.getLogger()
        self._old_level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self._handler)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.worker = Worker(config, KeyRing([generate_key()], source="env"))
        self.run(self.worker.start())
        deadline = time.monotonic() + 5
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run a coroutine on the worker's own loop (e.g. to reach its Core directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.run(self.worker.stop(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            root = logging.getLogger()
            root.removeHandler(self._handler)
            root.setLevel(self._old_level)
            self._handler.close()

    # -- helpers for tests --------------------------------------------------------------

    @property
    def core(self) -> Any:
        return self.worker.core

    def admin(self) -> dict[str, str]:
        return {"X-API-Token": self.admin_token}

    def call(self, method: str, path: str, token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["X-API-Token"] = token
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def seed_tenant(self, tenant_id: str, **fields: Any) -> str:
        answer = self.call("POST", "/tenant", self.admin_token, json={"id": tenant_id, **fields})
        assert answer.status_code in (200, 201), answer.text
        if answer.status_code == 201:
            self.keys[tenant_id] = answer.json()["api_key"]
        return self.keys[tenant_id]

    def expire_key(self, tenant_id: str) -> str:
        """Give the tenant a key that expired a minute ago (the API refuses past expiries)."""
        key = generate_token()

        async def write() -> None:
            async with self.core.store.transaction() as tx:
                await tx.execute("tenant_set_api_key", id=tenant_id,
                                 api_key_hash=hash_api_key(key),
                                 expires_at=int(time.time()) - 60, now=int(time.time()))

        self.run(write())
        self.keys[tenant_id] = key
        return key


def seed_standard(live: LiveServer) -> None:
    live.seed_tenant("acme", name="ACME")
    live.seed_tenant("other")
    live.seed_tenant("late")
    live.expire_key("late")
    live.seed_tenant("sleepy")
    answer = live.call("PATCH", "/tenant/sleepy", live.admin_token, json={"active": False})
    assert answer.status_code == 200, answer.text
    answer = live.call("POST", "/account", live.admin_token, json={
        "tenant_id": "acme", "id": "smtp1", "host": "smtp.example.com", "port": 587})
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live"))
    server.start()
    try:
        seed_standard(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(live: LiveServer) -> Any:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c
