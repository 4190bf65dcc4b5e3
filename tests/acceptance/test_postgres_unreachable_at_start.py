"""A worker that cannot reach PostgreSQL when it starts waits for it instead of ending FATAL.

Before, a worker restarted while the database was down (a PostgreSQL restart, a host that
boots mail-proxy before the database) crashed at start five times within a minute and its
supervisor gave up: the instance stayed down after the database came back. Now the worker
exits 75 (EX_TEMPFAIL), which its supervisor retries (1 s doubling to 30 s) without counting
a crash; a refused login or a missing database is still a crash.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from mail_proxy.instance.states import DATABASE_UNREACHABLE_EXIT, read_record
from tests.store.pg import pg_url_fixture  # noqa: F401  (fixture)
from tests.support.daemon import wait_for
from tests.support.tcp_relay import TcpRelay
from tests.support.worker import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mail-proxy", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env)


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


@pytest.fixture
def relay(pg_url: str) -> Iterator[TcpRelay]:
    target = urlsplit(pg_url).port or 5432
    proxy = TcpRelay(target)
    proxy.up()
    yield proxy
    proxy.close()


def test_supervisor_waits_for_the_database_and_recovers(pg_url: str, relay: TcpRelay) -> None:
    home = Path(os.environ["MAIL_PROXY_HOME"])
    env = {**os.environ, "MAIL_PROXY_BACKOFF_SCALE": "0.05"}
    r = cli("start", "pgw", "--db", via_port(pg_url, relay.port), "--port", str(free_port()),
            env=env)
    assert r.returncode == 0, r.stderr
    try:
        folder = home / "pgw"
        relay.down()
        os.kill(read_record(folder)["worker_pid"], signal.SIGKILL)  # one real crash
        log = folder / "logs" / "supervisor.log"

        def retries() -> int:
            return log.read_text().count("the worker cannot reach its database")

        # more attempts than the five crashes that would have ended FATAL
        wait_for(lambda: retries() >= 7, 90, "seven attempts while the database is down")
        record = read_record(folder) or {}
        assert record["state"] in ("BACKOFF", "STARTING"), record
        assert len(record["recent_crashes"]) == 1  # only the kill -9
        assert "FATAL" not in log.read_text()
        status = cli("status", "pgw")
        assert status.returncode == 3
        assert "database unreachable" in status.stdout or record["state"] == "STARTING"

        relay.up()
        wait_for(lambda: (read_record(folder) or {}).get("state") == "RUNNING", 60,
                 "RUNNING once the database answers")
        assert cli("status", "pgw").returncode == 0
        assert cli("pgw", "tenants", "add", "acme", "--no-api-key").returncode == 0
    finally:
        cli("stop", "pgw")


def test_serve_exit_codes_tell_waiting_from_a_wrong_database(pg_url: str,
                                                             relay: TcpRelay) -> None:
    """`serve` (what a systemd unit runs) exits 75 while the server cannot be reached, so
    `Restart=on-failure` keeps trying; a database that does not exist is an ordinary
    failure (exit 1), which no amount of waiting fixes."""
    relay.down()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
    env = {**base, "GMP_API_TOKEN": "t" * 32, "GMP_PORT": str(free_port()),
           "MAIL_PROXY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
           "GMP_DB_URL": via_port(pg_url, relay.port)}
    r = subprocess.run(["mail-proxy", "serve"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == DATABASE_UNREACHABLE_EXIT, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot open PostgreSQL database" in r.stderr

    missing = urlunsplit(urlsplit(pg_url)._replace(path="/mp_no_such_database"))
    r = subprocess.run(["mail-proxy", "serve"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL, env={**env, "GMP_DB_URL": missing})
    assert r.returncode == 1, r.stderr
    assert "mp_no_such_database" in r.stderr and "Traceback" not in r.stderr
