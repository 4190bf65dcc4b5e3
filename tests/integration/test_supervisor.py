"""The supervisor with a stand-in worker: start, restart after kill -9, FATAL, drain, stale.

The stand-in worker is a tiny stdlib HTTP server (or a script that exits at once); it is
injected with MAIL_PROXY_WORKER_ARGV, and MAIL_PROXY_BACKOFF_SCALE shortens the backoff.
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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mail_proxy.instance import paths, stopping
from mail_proxy.instance.states import is_alive, read_record

ROOT = Path(__file__).resolve().parents[2]

STUB = Path(__file__).resolve().parents[1] / "support" / "worker_stub.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_cli() -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    mode = {"value": "ok"}

    def cli(*args: str, worker: str = "ok") -> subprocess.CompletedProcess[str]:
        mode["value"] = worker
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MAIL_PROXY_BACKOFF_SCALE": "0.01",
               "MAIL_PROXY_WORKER_ARGV": json.dumps([sys.executable, str(STUB), "{port}",
                                                     worker])}
        return subprocess.run([sys.executable, "-m", "mail_proxy", *args], capture_output=True,
                              text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)

    yield cli
    for name in paths.instance_names():  # never leave a process behind
        record = read_record(paths.instance_dir(name)) or {}
        for kind in ("worker", "supervisor"):
            if is_alive(record.get(f"{kind}_pid"), record.get(f"{kind}_create_time")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record[f"{kind}_pid"], signal.SIGKILL)


def wait_for(check: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def record() -> dict:
    return read_record(paths.instance_dir("demo")) or {}


def test_start_restart_after_kill_and_drain(run_cli: Callable[..., subprocess.CompletedProcess[str]]
                                            ) -> None:
    port = free_port()
    r = run_cli("start", "demo", "--port", str(port), "--wait", "10")
    assert r.returncode == 0, r.stderr
    folder = paths.instance_dir("demo")
    token = (folder / "api_token").read_text().strip()
    rec = record()
    assert r.stdout.splitlines() == [
        f"Created instance 'demo' in {folder}",
        f"Admin token (stored in {folder / 'api_token'}): {token}",
        f"mail-proxy 'demo' is running at http://127.0.0.1:{port} (pid {rec['worker_pid']})"]
    wait_for(lambda: record().get("state") == "RUNNING")
    for name in ("supervisor.json", "supervisor.lock", "logs/supervisor.log"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((folder / "logs").stat().st_mode) == 0o700

    first_worker = rec["worker_pid"]
    os.kill(first_worker, signal.SIGKILL)
    wait_for(lambda: record().get("restarts") == 1 and record().get("state") == "RUNNING"
             and record().get("worker_pid") != first_worker)
    assert record()["last_exit_code"] == -signal.SIGKILL
    assert len(record()["recent_crashes"]) == 1

    again = run_cli("start", "demo")  # already running: the URL, exit 0, no token
    assert again.returncode == 0 and again.stdout.startswith("mail-proxy 'demo' is running at")
    status = run_cli("status", "demo", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["restarts"] == 1

    # the drain budget in force is recorded: `stop` waits for it, not for an edited one
    assert record()["shutdown_timeout"] == 30
    assert run_cli("demo", "config", "set", "shutdown_timeout", "1").returncode == 0
    assert stopping._stop_timeout("demo", lambda _line: None, record()) == 45
    assert stopping._stop_timeout("demo", lambda _line: None, None) == 16

    r = run_cli("stop", "demo")
    assert (r.returncode, r.stdout) == (0, "stopped\n"), r.stderr
    assert record()["state"] == "STOPPED"
    log = (folder / "logs" / "supervisor.log").read_text()
    assert "stub: got signal 15, draining" in log and "stub: drained" in log
    assert run_cli("status", "demo").returncode == 3
    assert run_cli("stop", "demo").stdout == "mail-proxy 'demo' is not running\n"


def test_always_crashing_worker_becomes_fatal(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    r = run_cli("start", "demo", "--port", str(free_port()), "--wait", "5", worker="crash")
    assert r.returncode == 1
    assert "stub: crashing" in r.stderr and "error: mail-proxy 'demo' could not start" in r.stderr
    wait_for(lambda: record().get("state") == "FATAL")
    assert len(record()["recent_crashes"]) == 5 and record()["last_exit_code"] == 3
    row = json.loads(run_cli("list", "--json").stdout)["instances"][0]
    assert (row["state"], row["stale"]) == ("FATAL", False)


def test_a_failed_start_shows_only_what_this_start_logged(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    r = run_cli("start", "demo", "--port", str(free_port()), "--wait", "5", worker="crash")
    assert r.returncode == 1
    log = paths.instance_dir("demo") / "logs" / "supervisor.log"
    with log.open("a") as fh:
        fh.write("OLD RUN: state STOPPED\n")
    r = run_cli("start", "demo", "--wait", "5", worker="crash")
    assert r.returncode == 1 and "stub: crashing" in r.stderr
    assert "OLD RUN" not in r.stderr, r.stderr


def test_wait_zero_launches_without_waiting(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    r = run_cli("start", "demo", "--port", str(free_port()), "--wait", "0")
    assert r.returncode == 0, r.stderr
    assert "'demo' is starting at http://127.0.0.1:" in r.stdout, r.stdout
    wait_for(lambda: record().get("state") == "RUNNING")
    r = run_cli("restart", "demo", "--wait", "0")
    assert r.returncode == 0 and "is starting" in r.stdout, r.stderr
    wait_for(lambda: record().get("state") == "RUNNING")
    assert run_cli("stop", "demo").returncode == 0


def test_killed_supervisor_leaves_a_stale_record(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    port = free_port()
    assert run_cli("start", "demo", "--port", str(port), "--wait", "10").returncode == 0
    rec = record()
    os.kill(rec["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not is_alive(rec["supervisor_pid"], rec["supervisor_create_time"]))
    row = json.loads(run_cli("list", "--json").stdout)["instances"][0]
    assert (row["state"], row["stale"], row["pid"]) == ("STOPPED", True, None)
    # the orphaned worker notices its parent is gone and exits on its own
    wait_for(lambda: not is_alive(rec["worker_pid"], rec["worker_create_time"]))
    r = run_cli("start", "demo", "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert record()["supervisor_pid"] != rec["supervisor_pid"]


def test_busy_port_and_second_supervisor(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("start", "demo", "--port", str(port))
        assert r.returncode == 1
        assert r.stderr == (f"error: port {port} on 127.0.0.1 is in use\n"
                            "hint: mail-proxy start demo --port N takes another\n")
        assert "Created instance" not in r.stdout
        assert not paths.instance_dir("demo").exists()  # a failed creation leaves nothing
    assert run_cli("start", "demo", "--wait", "10").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    second = subprocess.run([sys.executable, "-m", "mail_proxy.instance.supervisor", "demo"],
                            env=env, capture_output=True, timeout=10)
    assert second.returncode == 1
    assert record()["state"] == "RUNNING"


def test_stop_timeout_force_restart_and_serve_refusal(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    port = free_port()
    assert run_cli("start", "demo", "--port", str(port), "--wait", "10",
                   worker="stubborn").returncode == 0
    r = run_cli("serve", "demo")
    assert r.returncode == 1
    assert r.stderr.startswith("error: instance 'demo' is running under its supervisor")
    r = run_cli("stop", "demo", "--timeout", "0.5")
    assert (r.returncode, r.stderr) == (
        1, "error: instance 'demo' is still draining; use --force to kill it\n")
    r = run_cli("stop", "demo", "--timeout", "0.5", "--force")
    assert (r.returncode, r.stdout) == (0, "stopped\n")
    assert "leases expire" in r.stderr
    assert record()["state"] == "STOPPED"
    first = record()["supervisor_pid"]
    assert run_cli("start", "demo", "--wait", "10").returncode == 0
    r = run_cli("restart", "demo", "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mail-proxy 'demo' is running at")
    assert record()["supervisor_pid"] != first


def test_a_new_instance_that_cannot_be_made_or_reach_its_database_is_not_kept(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """--db and --key-file apply only when creating: an instance left behind by a failed
    creation would refuse the corrected command ("'demo' exists")."""
    nothing_listens = free_port()
    r = run_cli("start", "demo", "--db", f"postgresql://postgres@127.0.0.1:{nothing_listens}/x",
                "--port", str(free_port()))
    assert r.returncode == 1
    assert "error: cannot open PostgreSQL database" in r.stderr
    assert r.stderr.endswith("hint: instance 'demo' was not kept; correct --db (or start the "
                             "database) and run the same command again\n")
    assert not paths.instance_dir("demo").exists()
    r = run_cli("start", "demo", "--db", "mysql://x")
    assert (r.returncode, paths.instance_dir("demo").exists()) == (2, False)
    r = run_cli("start", "demo", "--key-file", "/nonexistent/encryption.key")
    assert (r.returncode, paths.instance_dir("demo").exists()) == (2, False)
    assert "cannot read key file" in r.stderr
    assert run_cli("start", "demo", "--wait", "10").returncode == 0  # the name is free
    assert record()["state"] == "RUNNING"


def test_a_new_instance_missing_the_databases_key_is_not_kept(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The refusal suggests the same start with --key-file: that only works when the failed
    creation left nothing behind, and nothing said "Created instance" meanwhile."""
    assert run_cli("start", "one", "--port", str(free_port()), "--wait", "10").returncode == 0
    assert run_cli("one", "tenants", "add", "acme", "--no-api-key").returncode == 0
    r = run_cli("one", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port",
                "2525", "--tls-mode", "none", "--user", "u", "--password", "pw", "--no-test")
    assert r.returncode == 0, r.stderr
    one = paths.instance_dir("one")
    shared = f"sqlite://{one / 'mail_service.db'}"
    r = run_cli("start", "two", "--db", shared, "--port", str(free_port()))
    assert r.returncode == 2
    assert "missing from the key ring of instance 'two'" in r.stderr
    # the instance is not kept, so there is no encryption.key of its own to copy lines into
    assert "--key-file PATH` (a copy of the encryption.key" in r.stderr
    assert "into this instance's encryption.key" not in r.stderr
    assert r.stderr.endswith("hint: instance 'two' was not kept; run the same command again "
                             "with --key-file PATH (or MAIL_PROXY_ENCRYPTION_KEY set)\n")
    assert "Created instance" not in r.stdout and "Admin token" not in r.stdout
    assert not paths.instance_dir("two").exists()
    r = run_cli("start", "two", "--db", shared, "--port", str(free_port()), "--key-file",
                str(one / "encryption.key"), "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Created instance 'two'")



def test_a_respawned_worker_serves_where_its_supervisor_probes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A port changed in config.toml while the instance runs applies at the next start: a
    worker that re-read it on respawn bound the new port while the supervisor probed the
    old one, and was killed every 30 s without end (operations hunt of 2026-11-25)."""
    from mail_proxy.instance.supervisor import WORKER_ARGV_ENV, worker_argv

    monkeypatch.delenv(WORKER_ARGV_ENV, raising=False)
    argv = worker_argv("demo", "127.0.0.1", 49101, Path("/x"))
    assert argv[-6:] == ["serve", "demo", "--host", "127.0.0.1", "--port", "49101"]


async def test_the_output_pump_survives_a_line_longer_than_its_buffer() -> None:
    """A worker line of 64 KiB or more ended the pump: the worker then blocked on a full
    pipe and its death went unnoticed (operations hunt of 2026-11-25)."""
    import asyncio
    import types

    from mail_proxy.instance.supervisor import Supervisor

    logged: list[str] = []
    fake = types.SimpleNamespace(log=types.SimpleNamespace(
        info=lambda text, **_kw: logged.append(text)))
    stream = asyncio.StreamReader()  # the 64 KiB limit of a subprocess pipe
    stream.feed_data(b"x" * 200_000 + b"\nafter the long one\nno newline at the end")
    stream.feed_eof()
    await Supervisor.pump(fake, stream)  # type: ignore[arg-type]
    assert "".join(logged[:-2]) == "x" * 200_000
    assert logged[-2:] == ["after the long one", "no newline at the end"]


def test_stop_after_the_supervisor_was_killed_stops_its_worker(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """`stop` said "not running" and forgot the worker's pid while the orphan still served,
    so a `start` then found the port in use (operations hunt of 2026-11-25)."""
    assert run_cli("start", "demo", "--port", str(free_port()), "--wait", "10",
                   worker="lingering").returncode == 0
    rec = record()
    os.kill(rec["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not is_alive(rec["supervisor_pid"], rec["supervisor_create_time"]))
    assert is_alive(rec["worker_pid"], rec["worker_create_time"])
    r = run_cli("stop", "demo", "--timeout", "10")
    assert (r.returncode, r.stdout) == (0, "stopped\n"), r.stderr
    assert "its worker" in r.stderr
    assert not is_alive(rec["worker_pid"], rec["worker_create_time"])
    assert record()["state"] == "STOPPED"
    assert run_cli("start", "demo", "--wait", "10").returncode == 0


def test_start_on_a_running_instance_names_where_it_runs_and_what_it_ignores(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    port = free_port()
    assert run_cli("start", "demo", "--port", str(port), "--wait", "10").returncode == 0
    assert run_cli("demo", "config", "set", "port", str(free_port())).returncode == 0
    r = run_cli("start", "demo", "--port", str(free_port()))
    assert r.returncode == 0
    assert r.stdout.startswith(f"mail-proxy 'demo' is running at http://127.0.0.1:{port} ")
    assert r.stderr.startswith("note: --host and --port apply to a stopped instance")


def test_restart_refuses_before_stopping_what_start_would_refuse(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """A restart used to stop the running instance and only then find that `start` refused
    (docs audit, 2026-11-25): the instance stayed down. Now the refusal comes first and the
    same worker keeps serving."""
    assert run_cli("start", "demo", "--port", str(free_port()), "--wait", "10").returncode == 0
    worker = record()["worker_pid"]
    folder = paths.instance_dir("demo")

    token = (folder / "api_token").read_text()
    (folder / "api_token").write_text("short\n")
    r = run_cli("restart", "demo", "--wait", "10")
    assert r.returncode == 2 and "admin token" in r.stderr, r.stderr
    assert (record()["state"], record()["worker_pid"]) == ("RUNNING", worker)
    (folder / "api_token").write_text(token)

    ring = (folder / "encryption.key").read_text()
    (folder / "encryption.key").write_text(ring + "garbage!!\n")
    r = run_cli("restart", "demo", "--wait", "10")
    assert r.returncode == 2, r.stderr
    assert (record()["state"], record()["worker_pid"]) == ("RUNNING", worker)
    (folder / "encryption.key").write_text(ring)

    with socket.socket() as busy:  # `config set port` to a port taken meanwhile
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert run_cli("demo", "config", "set", "port", str(taken)).returncode == 0
        r = run_cli("restart", "demo", "--wait", "10")
        assert (r.returncode, r.stderr.splitlines()[:2]) == (
            1, [f"error: port {taken} on 127.0.0.1 is in use",
                "hint: mail-proxy demo config set port N, then mail-proxy restart demo"]
        ), r.stderr
        assert (record()["state"], record()["worker_pid"]) == ("RUNNING", worker)
    r = run_cli("restart", "demo", "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert record()["port"] == taken and record()["worker_pid"] != worker

    # a stopped instance that cannot start is not said to have been stopped by the restart
    assert run_cli("stop", "demo").returncode == 0
    (folder / "encryption.key").write_text("AAAA\n")
    r = run_cli("restart", "demo", "--wait", "10")
    assert r.returncode == 2 and "encryption.key" in r.stderr, r.stderr
    assert "stopped by this restart" not in r.stderr, r.stderr


def test_start_and_delete_see_a_worker_that_outlived_its_supervisor(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """kill -9 of the supervisor alone: its worker drains on. `start` said "port in use; use
    --port N", whose advice put a second worker on the queue, and `delete --force` removed
    the folder under the still-serving worker (ops hunt, 2026-11-25)."""
    port = free_port()
    assert run_cli("start", "demo", "--port", str(port), "--wait", "10",
                   worker="lingering").returncode == 0
    rec = record()
    os.kill(rec["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not is_alive(rec["supervisor_pid"], rec["supervisor_create_time"]))
    r = run_cli("start", "demo", "--wait", "10")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"error: the worker of instance 'demo' (pid {rec['worker_pid']}) is still draining: "
        "its supervisor is gone", "hint: wait for it to end, or mail-proxy stop demo"]
    r = run_cli("delete", "demo", "--force")
    assert r.returncode == 0, r.stderr
    assert not is_alive(rec["worker_pid"], rec["worker_create_time"])
    assert not paths.instance_dir("demo").exists()


def test_start_during_a_stop_waits_for_it_and_starts_afresh(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """`start` on a STOPPING instance answered "is stopping" with exit 0, and nothing ran
    once the drain ended (ops hunt, 2026-11-25)."""
    assert run_cli("start", "demo", "--port", str(free_port()), "--wait", "10").returncode == 0
    assert run_cli("stop", "demo").returncode == 0
    assert run_cli("demo", "config", "set", "shutdown_timeout", "1").returncode == 0
    assert run_cli("start", "demo", "--wait", "10", worker="stubborn").returncode == 0
    first = record()["supervisor_pid"]
    assert run_cli("stop", "demo", "--timeout", "0.3").returncode == 1  # still draining
    r = run_cli("start", "demo", "--wait", "0.5")
    assert (r.returncode, r.stderr.splitlines()[0]) == (
        1, f"error: instance 'demo' is still stopping (supervisor pid {first})"), r.stderr
    r = run_cli("start", "demo", "--wait", "25")  # the supervisor kills it after 1 + 10 s
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mail-proxy 'demo' is running at")
    assert record()["state"] == "RUNNING" and record()["supervisor_pid"] != first


def test_start_warns_about_unknown_config_keys(
        run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """A typo in config.toml ("prot") was ignored without a word (ops hunt, 2026-11-25)."""
    assert run_cli("start", "demo", "--port", str(free_port()), "--wait", "10").returncode == 0
    assert run_cli("stop", "demo").returncode == 0
    toml = paths.instance_dir("demo") / "config.toml"
    toml.write_text(toml.read_text() + "prot = 8100\n")
    r = run_cli("start", "demo", "--wait", "10")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"warning: {toml}: unknown key(s) 'prot' ignored (known: name, ")
