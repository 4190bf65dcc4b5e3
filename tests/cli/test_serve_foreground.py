"""`mail-proxy serve NAME` (systemd, containers) is visible to the rest of the CLI.

A real foreground worker in its own process; `list`, `status`, `start`, `run-now`, the
reload signals of `token --regenerate`, `restart` and `stop` are the real commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mail_proxy.instance.states import is_alive, read_record
from tests.support.daemon import Daemon, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def served() -> Iterator[tuple[Daemon, subprocess.Popen[bytes]]]:
    daemon = Daemon.create("fg")
    log = (daemon.folder / "serve.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mail_proxy", "serve", "fg"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        try:
            return httpx.get(f"{daemon.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 30, "serve answering /health")
        yield daemon, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def test_a_foreground_worker_is_seen_signalled_and_stopped_by_the_cli(
        served: tuple[Daemon, subprocess.Popen[bytes]]) -> None:
    daemon, proc = served
    record = read_record(daemon.folder) or {}
    assert record["state"] == "RUNNING" and record["foreground"] is True
    assert record["worker_pid"] == proc.pid == record["supervisor_pid"]

    listed = daemon.cli("list")
    assert "RUNNING" in listed.stdout and str(proc.pid) in listed.stdout, listed.stdout
    assert json.loads(daemon.cli("status", "fg", "--json").stdout)["foreground"] is True
    assert json.loads(daemon.cli("list", "--json").stdout)["instances"][0]["foreground"]
    assert daemon.cli("status", "fg").returncode == 0

    again = daemon.cli("start", "fg")
    assert again.returncode == 0 and "is running" in again.stdout, again.stderr
    second = daemon.cli("serve", "fg")
    assert second.returncode == 1 and "foreground" in second.stderr, second.stderr
    restart = daemon.cli("restart", "fg")
    assert restart.returncode == 1 and "runs in the foreground" in restart.stderr
    assert proc.poll() is None

    woken = daemon.cli("run-now")
    assert woken.returncode == 0, woken.stderr

    old = daemon.token
    regenerated = daemon.cli("fg", "token", "--regenerate")
    assert regenerated.returncode == 0 and "reload" in regenerated.stderr
    new = (daemon.folder / "api_token").read_text().strip()
    assert new != old

    def new_token_works() -> bool:
        r = httpx.get(f"{daemon.url}/tenants", headers={"X-API-Token": new}, timeout=5)
        return r.status_code == 200

    wait_for(new_token_works, 10, "the reloaded token accepted")

    stopped = daemon.cli("stop", "fg")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert proc.wait(30) == 0
    record = read_record(daemon.folder) or {}
    assert record["state"] == "STOPPED" and record["last_exit_code"] == 0
    assert not is_alive(record.get("worker_pid"), record.get("worker_create_time"))
    assert "STOPPED" in daemon.cli("list").stdout


def test_a_killed_foreground_worker_leaves_a_stale_record_that_start_replaces(
        served: tuple[Daemon, subprocess.Popen[bytes]]) -> None:
    daemon, proc = served
    proc.kill()
    proc.wait(10)
    status = daemon.cli("status", "fg")
    assert status.returncode == 3 and "STOPPED" in status.stdout
    started = daemon.cli("start", "fg", "--wait", "30")
    try:
        assert started.returncode == 0, started.stderr
        record = read_record(daemon.folder) or {}
        assert "foreground" not in record and record["supervisor_pid"] != record["worker_pid"]
    finally:
        daemon.cli("stop", "fg")


def test_a_worker_that_cannot_listen_exits_at_once() -> None:
    # Its database was open when the bind failed: its threads used to keep the process
    # alive (and deaf to SIGTERM) after "worker failed to start".
    import socket

    daemon = Daemon.create("busy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", daemon.port))
        taken.listen()
        r = subprocess.run([sys.executable, "-m", "mail_proxy", "serve", "busy"],
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "in use" in r.stderr, r.stderr
    record = read_record(daemon.folder) or {}
    assert record["state"] == "STOPPED" and record["last_exit_code"] == 1
