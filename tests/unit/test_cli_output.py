"""Exact output and exit codes of the CLI frame, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mail_proxy import __version__
from mail_proxy.instance import paths
from mail_proxy.instance.config import create_instance
from mail_proxy.instance.states import new_record, write_record

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "mail_proxy", *args], capture_output=True,
                          text=True, env=full, timeout=20, stdin=subprocess.DEVNULL)


def test_version() -> None:
    r = cli("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"mail-proxy {__version__}\n", "")


def test_list_json_empty_and_with_instances() -> None:
    r = cli("list", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"ok": True, "instances": []})
    create_instance("main", "127.0.0.1", 18090, None)
    folder = paths.instance_dir("main")
    r = cli("list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "instances": [{
        "name": "main", "state": "STOPPED", "stale": False, "pid": None, "foreground": False,
        "host": "127.0.0.1", "port": 18090, "url": "http://127.0.0.1:18090",
        "database": f"sqlite://{folder}/mail_service.db", "uptime_seconds": None}]}


def test_stale_record_is_shown_stopped() -> None:
    create_instance("main", "127.0.0.1", 18091, None)
    record = new_record(__version__)
    # a pid that exists (ours) but with a create time that does not match: a reused pid
    record.update(state="RUNNING", supervisor_pid=os.getpid(), supervisor_create_time=1.0,
                  worker_pid=os.getpid(), worker_create_time=1.0, started_at=1)
    write_record(paths.instance_dir("main"), record)
    row = json.loads(cli("list", "--json").stdout)["instances"][0]
    assert (row["state"], row["stale"], row["pid"]) == ("STOPPED", True, None)
    r = cli("list")
    assert "STOPPED (stale)" in r.stdout
    r = cli("status", "main", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 3
    assert doc == {"ok": True, "name": "main", "state": "STOPPED", "stale": True,
                   "supervisor_pid": None, "worker_pid": None, "foreground": False,
                   "url": "http://127.0.0.1:18091",
                   "database": doc["database"], "uptime_seconds": None, "restarts": 0,
                   "last_exit_code": None, "version": __version__, "server": None,
                   "messages": {}}


def test_errors_are_one_line_with_documented_exit_codes() -> None:
    r = cli("status", "ghost")
    assert (r.returncode, r.stdout, r.stderr) == (3, "", "error: instance 'ghost' not found\n")
    r = cli("ghost", "info")
    assert r.returncode == 3 and r.stderr.startswith("error: instance 'ghost' not found\n")
    r = cli("list", "--bogus")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: No such option: --bogus", "hint: mail-proxy list --help"]
    r = cli("tenants", "list")
    assert (r.returncode, r.stderr.splitlines()[0]) == (
        3, "error: no instance given and no context set")
    r = cli("start", "List")
    assert r.returncode == 2 and "invalid instance name 'List'" in r.stderr
    assert "Traceback" not in r.stderr


def test_context_notice_on_stderr() -> None:
    create_instance("main", "127.0.0.1", 18092, None)
    r = cli("tenants", "list", "--json")  # the only instance is the context
    assert (r.returncode, r.stderr) == (0, "(main)\n")
    assert r.stdout.startswith("{")
    r = cli("main", "tenants", "add", "acme", "--name", "Acme", "--no-api-key")
    assert r.returncode == 0 and r.stderr == ""
    r = cli("send", "x.eml", env={"GMP_TENANT": "acme"})
    assert r.returncode == 1 and r.stderr.startswith("(main/acme)\n")


def test_token_and_regenerate() -> None:
    config = create_instance("main", "127.0.0.1", 18093, None)
    r = cli("main", "token")
    assert (r.returncode, r.stdout) == (0, config.api_token + "\n")
    r = cli("main", "token", "--regenerate")
    assert r.returncode == 0 and r.stdout.strip() != config.api_token
    assert (paths.instance_dir("main") / "api_token").read_text().strip() == r.stdout.strip()
    r = cli("main", "token", "--regenerate", env={"GMP_API_TOKEN": "x"})
    assert r.returncode == 2 and r.stderr.startswith("error: GMP_API_TOKEN is set")


def test_use_and_current() -> None:
    create_instance("main", "127.0.0.1", 18094, None)
    create_instance("other", "127.0.0.1", 18095, None)
    assert cli("current").stdout == "no context set\n"
    r = cli("use", "ghost")
    assert (r.returncode, r.stderr) == (3, "error: instance 'ghost' not found\n")
    assert cli("use", "main").stdout == "context: main\n"
    assert cli("current").stdout == "main  (instance: .current)\n"
    r = cli("current", env={"GMP_TENANT": "acme"})
    assert r.stdout == "main/acme  (instance: .current, tenant: GMP_TENANT)\n"
    r = cli("current", "--export", env={"GMP_TENANT": "acme"})
    assert r.stdout == "export GMP_INSTANCE=main\nexport GMP_TENANT=acme\n"
    r = cli("use", "main/nobody")
    assert (r.returncode, r.stderr) == (1, "error: tenant 'nobody' not found in instance 'main'\n")
    assert cli("use", "--clear").returncode == 0
    assert paths.read_current() == (None, None)


def test_delete_needs_force_without_terminal() -> None:
    create_instance("main", "127.0.0.1", 18096, None)
    r = cli("delete", "main")
    assert r.returncode == 2 and "pass --force" in r.stderr
    r = cli("delete", "main", "--force")
    assert (r.returncode, r.stdout) == (0, "deleted instance 'main'\n")
    assert not paths.instance_dir("main").exists()


def test_table_cells_are_literal_text_not_markup(capsys) -> None:
    """Cells hold what clients and SMTP servers wrote: "[/]" crashed a listing with a
    MarkupError and "[b]" vanished from it (CLI hunt of 2026-11-25)."""
    from mail_proxy.cli.application import table
    from mail_proxy.cli.dataview import record_table

    table(["ID", "SUBJECT"], [["m-1", "price [b]not[/b] [red]final"], ["m-2", "broken [/]"]])
    record_table([("subject", "[/] and [bold]x[/bold]")])
    shown = capsys.readouterr().out
    assert "price [b]not[/b] [red]final" in shown
    assert "broken [/]" in shown and "[/] and [bold]x[/bold]" in shown


def test_the_messages_table_shows_no_last_error_for_a_sent_message() -> None:
    """Delivery hunt: a message sent at its second attempt read "LAST ERROR: connection
    refused" in `messages list`; the CSV keeps the stored column."""
    from mail_proxy.cli.messages import _row

    m = {"id": "m1", "status": "sent", "priority": 2, "account_id": "main", "created_at": 1,
         "sent_at": 2, "attempts": 2, "to": ["a@example.com"], "subject": "s",
         "last_error": "connection refused by 127.0.0.1:2525"}
    assert _row(m, times=True)[-1] == "-"
    assert _row(m, times=False)[-1] == "connection refused by 127.0.0.1:2525"
    assert _row({**m, "status": "deferred"}, times=True)[-1].startswith("connection refused")
