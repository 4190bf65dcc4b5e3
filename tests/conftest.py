"""Test isolation: every test gets its own MAIL_PROXY_HOME, no colours, fixed width.

Shared fixtures: ``keyring`` (a fresh one-key ring), ``core`` (a Core on a new SQLite file, or
on PostgreSQL in a fresh schema when parametrised with ``db_backend``), and ``smtp_server``
(a recording aiosmtpd server on loopback), ``pools`` (SMTP pools with 2 s connect and send
timeouts, closed afterwards).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mail_proxy.security.crypto import KeyRing, generate_key


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MAIL_PROXY_HOME", str(home / ".mail-proxy"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    for name in list(os.environ):
        if name.startswith("GMP_") or name in ("MAIL_PROXY_ENCRYPTION_KEY", "MAIL_PROXY_DEBUG"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([generate_key()], source="env")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'mail_service.db'}"


@pytest.fixture
async def core(sqlite_url: str, keyring: KeyRing) -> AsyncIterator[object]:
    from mail_proxy.manager.core import Core

    c = await Core.open(sqlite_url, keyring, name="test")
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def smtp_server() -> AsyncIterator[object]:
    from tests.support.smtp_server import RecordingSmtpServer

    async with RecordingSmtpServer() as server:
        yield server


@pytest.fixture
async def pools() -> AsyncIterator[object]:
    from mail_proxy.delivery.smtp import SmtpPools

    p = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=2)
    yield p
    await p.close()
