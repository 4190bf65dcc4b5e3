"""Fixtures for acceptance tests: a real instance (CLI, supervisor, worker) and SMTP server.

tests/conftest.py already points MAIL_PROXY_HOME at a fresh temporary folder per test, so
every instance created here lives and dies with its test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon, RestartableSmtp

# Short enough that recovery after a kill takes seconds, long enough to be legal (30-3600).
LEASE_SECONDS = 30
CONNECTIONS = 10


@pytest.fixture
def smtp() -> Iterator[RestartableSmtp]:
    with RestartableSmtp() as server:
        yield server


@pytest.fixture
def daemon(smtp: RestartableSmtp) -> Iterator[Daemon]:
    """An instance with tenant ``acme`` and account ``main`` on ``smtp``; not started."""
    d = Daemon.create("rel", shutdown_timeout=10)
    d.configure(settings={"lease_seconds": LEASE_SECONDS},
                tenants=[{"id": "acme"}],
                accounts=[{"id": "main", "tenant_id": "acme", "port": smtp.port,
                           "max_connections": CONNECTIONS}])
    try:
        yield d
    finally:
        d.cleanup()
