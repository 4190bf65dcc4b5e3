"""A new instance joining a shared PostgreSQL database without its key ring is refused
with one clear line, and `start --key-file` lets it join (issue 9)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mail_proxy.security.crypto import KeyRing
from tests.store.pg import pg_url_fixture  # noqa: F401  (fixture)
from tests.support.worker import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mail-proxy", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_missing_key_is_refused_and_key_file_joins(pg_url) -> None:
    home = Path(os.environ["MAIL_PROXY_HOME"])
    started: list[str] = []
    try:
        r = cli("start", "one", "--db", pg_url, "--port", str(free_port()))
        assert r.returncode == 0, r.stderr
        started.append("one")
        assert cli("one", "tenants", "add", "acme", "--no-api-key").returncode == 0
        r = cli("one", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port",
                "2525", "--tls-mode", "none", "--user", "mailer", "--password", "s3cret-pw",
                "--no-test")
        assert r.returncode == 0, r.stderr
        ring = KeyRing.load(home / "one", env={})
        kid = ring.primary_kid

        r = cli("start", "two", "--db", pg_url, "--port", str(free_port()))
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: the database holds values")
        assert kid in lines[0] and "encryption.key" in lines[0]
        assert lines[1] == ("hint: instance 'two' was not kept; run the same command again "
                            "with --key-file PATH (or MAIL_PROXY_ENCRYPTION_KEY set)")
        assert "s3cret-pw" not in r.stderr + r.stdout
        assert not (home / "two").exists()

        r = cli("start", "three", "--db", pg_url, "--port", str(free_port()),
                "--key-file", str(home / "one" / "encryption.key"))
        assert r.returncode == 0, r.stderr
        started.append("three")
        assert "s3cret-pw" not in r.stdout
    finally:
        for name in started:
            cli("stop", name)
