"""`mail-proxy start` with real supervisors: concurrent starts, a relative MAIL_PROXY_HOME,
and the modes of a database created outside the instance folder.

The worker is a stand-in HTTP server injected with MAIL_PROXY_WORKER_ARGV, so these tests
exercise the CLI and the supervisor, not the web stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mail_proxy.instance.logs import log_path
from mail_proxy.instance.states import is_alive, read_record

ROOT = Path(__file__).resolve().parents[2]

STUB = ROOT / "tests" / "support" / "worker_stub.py"  # the supervisor tests' stand-in

Cli = Callable[..., subprocess.CompletedProcess[str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stub_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MAIL_PROXY_BACKOFF_SCALE": "0.01",
            "MAIL_PROXY_WORKER_ARGV": json.dumps([sys.executable, str(STUB), "{port}", "ok"])}


@pytest.fixture
def homes() -> Iterator[list[Path]]:
    """Instance roots a test used; every supervisor and worker in them is killed at the end."""
    used: list[Path] = []
    yield used
    for home in used:
        for record_file in home.glob("*/supervisor.json"):
            record = read_record(record_file.parent) or {}
            for kind in ("worker", "supervisor"):
                if is_alive(record.get(f"{kind}_pid"), record.get(f"{kind}_create_time")):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(record[f"{kind}_pid"], signal.SIGKILL)


@pytest.fixture
def cli(stub_env: dict[str, str], homes: list[Path]) -> Cli:
    homes.append(Path(os.environ["MAIL_PROXY_HOME"]))

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            umask: int = 0o022) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mail_proxy", *args], capture_output=True,
                              text=True, env={**stub_env, **(env or {})}, cwd=cwd, timeout=60,
                              stdin=subprocess.DEVNULL, umask=umask)

    return run


def start_twice(stub_env: dict[str, str], *args: str) -> list[tuple[int, str, str]]:
    procs = [subprocess.Popen([sys.executable, "-m", "mail_proxy", "start", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=stub_env, stdin=subprocess.DEVNULL) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out, err))
    return results


def test_concurrent_starts_both_report_the_running_instance(
        cli: Cli, stub_env: dict[str, str]) -> None:
    port = free_port()
    for attempt in range(3):  # a new instance, then a stopped one, twice over
        results = start_twice(stub_env, "cc", "--port", str(port), "--wait", "20")
        for code, out, err in results:
            # seen once in a full run on a loaded machine: keep what the supervisor said
            folder = Path(os.environ["MAIL_PROXY_HOME"]) / "cc"
            log = log_path(folder, supervisor=True)
            assert code == 0, (out + err + (log.read_text() if log.exists() else "")
                               + json.dumps(read_record(folder)))
            assert f"mail-proxy 'cc' is running at http://127.0.0.1:{port}" in out, out + err
        created = [out for _code, out, _err in results if "Created instance" in out]
        assert len(created) == (1 if attempt == 0 else 0), results
        if created:  # one creator: one admin token, and it is the stored one
            token = (Path(os.environ["MAIL_PROXY_HOME"]) / "cc" / "api_token").read_text()
            assert token.strip() in created[0]
        assert cli("stop", "cc").returncode == 0


def test_relative_home_is_made_absolute(cli: Cli, tmp_path: Path, homes: list[Path]) -> None:
    homes.append(tmp_path / "relhome")
    env = {"MAIL_PROXY_HOME": "relhome"}
    r = cli("start", "rel1", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    config = tomllib.loads((tmp_path / "relhome" / "rel1" / "config.toml").read_text())
    assert config["db_url"] == f"sqlite://{tmp_path / 'relhome' / 'rel1' / 'mail_service.db'}"
    listed = cli("list", "--json", env=env, cwd=tmp_path)
    assert json.loads(listed.stdout)["instances"][0]["state"] == "RUNNING", listed.stdout
    assert cli("stop", "rel1", env=env, cwd=tmp_path).returncode == 0


def test_database_outside_the_folder_is_created_0600(cli: Cli, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    r = cli("start", "ext", "--port", str(free_port()), "--db", f"sqlite://{shared}/ext.db")
    assert r.returncode == 0, r.stdout + r.stderr
    made = sorted(shared.iterdir())
    assert shared / "ext.db" in made
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    assert cli("stop", "ext").returncode == 0


def test_start_with_an_unresolvable_host_is_not_port_in_use(cli: Cli) -> None:
    r = cli("start", "hh2", "--host", "nosuch.invalid")
    assert r.returncode == 2 and "in use" not in r.stderr and "no free port" not in r.stderr
    assert "nosuch.invalid" in r.stderr


@pytest.mark.parametrize("running", [False, True])
def test_start_never_recreates_over_an_instance_that_lost_its_config(cli: Cli,
                                                                    running: bool) -> None:
    """config.toml moved aside, then `start NAME`: it was taken for a new instance; the
    creation failed its key check and removed the folder, database included, even under a
    running worker (ops hunt, 2026-11-25). Without encrypted values it replaced the token and
    the key ring instead."""
    folder = Path(os.environ["MAIL_PROXY_HOME"]) / "lost"
    assert cli("start", "lost", "--port", str(free_port())).returncode == 0
    if not running:
        assert cli("stop", "lost").returncode == 0
    before = {f: (folder / f).read_bytes() for f in ("api_token", "encryption.key")}
    db = (folder / "mail_service.db").stat().st_ino
    (folder / "config.toml").rename(folder.parent / "config.toml.aside")
    r = cli("start", "lost", "--port", str(free_port()))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: instance 'lost' has no config.toml, but its folder ")
    assert "mail_service.db" in r.stderr and "Traceback" not in r.stderr
    assert "Created instance" not in r.stdout
    assert (folder / "mail_service.db").stat().st_ino == db
    assert {f: (folder / f).read_bytes() for f in before} == before
    (folder.parent / "config.toml.aside").rename(folder / "config.toml")
    assert cli("stop", "lost").returncode == 0
