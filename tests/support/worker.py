"""Run a real worker (HTTP API + dispatcher + reporter) inside the test's event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from mail_proxy.instance.config import ProcessConfig
from mail_proxy.security.crypto import KeyRing
from mail_proxy.security.tokens import generate_token
from mail_proxy.server import Worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_config(folder: Path, *, db_url: str | None = None, **overrides: Any) -> ProcessConfig:
    values: dict[str, Any] = {
        "name": "test", "folder": folder, "host": "127.0.0.1", "port": free_port(),
        "db_url": db_url or f"sqlite://{folder / 'mail_service.db'}", "log_level": "info",
        "log_format": "text", "shutdown_timeout": 5, "db_pool_size": 5,
        "api_token": generate_token(), "cache_dir": folder / "cache"}
    values.update(overrides)
    return ProcessConfig(**values)


@asynccontextmanager
async def running_worker(folder: Path, keyring: KeyRing, **overrides: Any
                         ) -> AsyncIterator[tuple[Worker, httpx.AsyncClient]]:
    config = process_config(folder, **overrides)
    worker = Worker(config, keyring)
    await worker.start()
    headers = {"X-API-Token": config.api_token}
    try:
        async with httpx.AsyncClient(base_url=config.url, headers=headers, timeout=10) as client:
            yield worker, client
    finally:
        await worker.stop()
