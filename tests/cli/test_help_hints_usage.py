"""QA walkthrough findings: ``-h`` everywhere (and the reference matching the real help),
hints with the real names, bad flag values as usage errors, and ``accounts add`` telling
that a failed connection test kept the account."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from mail_proxy.instance.config import ProcessConfig

ROOT = Path(__file__).resolve().parents[2]


def _reference_blocks() -> dict[str, str]:
    text = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    return dict(re.findall(r"### `([^`]+)`\n\n```text\n(.*?)\n```", text, re.S))


def _command_paths() -> list[tuple[str, list[str]]]:
    """(level, command words) of every command and group of the three apps."""
    from mail_proxy.cli import instance_app, main_app, tenant_app

    found: list[tuple[str, list[str]]] = []

    def walk(level: str, command: Any, path: list[str]) -> None:
        found.append((level, path))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(level, sub, [*path, name])

    for level, app in (("global", main_app.global_app), ("instance", instance_app.app),
                       ("tenant", tenant_app.app)):
        walk(level, typer.main.get_command(app), [])
    return found


def test_dash_h_is_help_everywhere_and_the_reference_is_that_help(
        cli: Any, instance: ProcessConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # "main"/"acme01" have the length of "NAME"/"TENANT": the same wrapping as the reference
    assert cli("main", "tenants", "add", "acme01", "--no-api-key").code == 0
    monkeypatch.setenv("COLUMNS", "100")  # as the reference is generated
    blocks = _reference_blocks()
    prefix = {"global": ([], "mail-proxy"), "instance": (["main"], "mail-proxy NAME"),
              "tenant": (["main", "acme01"], "mail-proxy NAME TENANT")}
    paths = _command_paths()
    assert len(paths) == len(blocks) > 50
    for level, path in paths:
        words, shown = prefix[level]
        if level == "global" and not path:
            continue  # bare `mail-proxy -h` is checked below (no grammar in front)
        name = " ".join([shown, *path])
        real = "mail-proxy " + " ".join([*words, *path])
        for flag in ("-h", "--help"):
            r = cli(*words, *path, flag)
            assert r.code == 0, (name, flag, r.err)
            assert "-h, --help  " in r.out, (name, flag)
            assert r.out.rstrip().replace(real, name, 1) == blocks[name], (name, flag)
    r = cli("-h")
    assert r.code == 0 and r.out.rstrip() == blocks["mail-proxy"]


def test_hints_name_the_real_instance(cli: Any, instance: ProcessConfig) -> None:
    r = cli("main", "tenants", "list")
    assert (r.code, r.out, r.err) == (
        0, "", "no tenants yet; add one with: mail-proxy main tenants add\n")
    r = cli("tenants", "list")  # the only instance, taken from the context
    assert r.err == "(main)\nno tenants yet; add one with: mail-proxy main tenants add\n"
    assert cli("main", "tenants", "add", "acme", "--no-api-key").code == 0
    r = cli("main", "acme", "accounts", "list")
    assert r.err == "no accounts yet; add one with: mail-proxy main acme accounts add\n"


@pytest.mark.parametrize(("args", "message"), [
    (["messages", "list", "--status", "bogus"],
     "error: --status: 'bogus' is not one of queued, deferred, sending, sent, error, "
     "cancelled, all\n"),
    (["messages", "list", "--cursor", "bogus"],
     "error: --cursor: 'bogus' is not a cursor of this list\n"
     "hint: pass the next_cursor printed by the previous page\n"),
    (["accounts", "add", "smtp1", "--host", "smtp.example.com", "--tls-mode", "ssl",
      "--no-test"], "error: --tls-mode: 'ssl' is not one of tls, starttls, none\n"),
    (["accounts", "add", "smtp1", "--host", "smtp.example.com", "--limit-per-hour", "5",
      "--limit-behavior", "drop", "--no-test"],
     "error: --limit-behavior: 'drop' is not one of defer, reject\n"),
    (["accounts", "update", "smtp1", "--tls-mode", "TLS"],
     "error: --tls-mode: 'TLS' is not one of tls, starttls, none\n"),
    (["send", "mail.eml", "--priority", "urgent"],
     "error: --priority: 'urgent' is not a priority\n"
     "hint: use 0-3 or immediate, high, medium, low\n"),
])
def test_a_bad_flag_value_is_a_usage_error(cli: Any, tenant: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mail.eml").write_text("From: a@acme.test\nTo: b@example.com\n"
                                       "Subject: hi\n\nhello\n", encoding="utf-8")
    r = cli("main", "acme", *args)
    assert (r.code, r.out, r.err) == (2, "", message)
    accounts = json.loads(cli("main", "acme", "accounts", "list", "--json").out)["accounts"]
    messages = json.loads(cli("main", "acme", "messages", "list", "--json").out)["messages"]
    assert accounts == [] and messages == []  # checked before anything was written


def test_bad_numbers_and_cursors_are_usage_errors(cli: Any, tenant: str) -> None:
    r = cli("main", "acme", "accounts", "add", "smtp1", "--host", "h.example.com", "--ttl",
            "5", "--no-test")
    assert r.code == 2 and r.err.startswith("error: Invalid value for '--ttl'")
    r = cli("main", "acme", "accounts", "test", "smtp1", "--timeout", "0")
    assert r.code == 2 and r.err.startswith("error: Invalid value for '--timeout'")
    r = cli("main", "command-log", "list", "--cursor", "zzz")
    assert (r.code, r.err) == (2, "error: --cursor: 'zzz' is not a cursor of this list\n"
                                  "hint: pass the next_cursor printed by the previous page\n")
    r = cli("main", "acme", "messages", "list", "--status", "all")
    assert r.code == 0


def test_a_failed_test_after_add_says_the_account_was_kept(cli: Any, tenant: str) -> None:
    from tests.cli.conftest import free_port

    port = free_port()  # nothing listens: the test fails at TCP connect
    r = cli("main", "acme", "accounts", "add", "smtp1", "--host", "127.0.0.1", "--port",
            str(port), "--tls-mode", "none", "--test")
    assert r.code == 1
    assert r.out.splitlines()[0] == "created account 'smtp1'"
    assert r.err == (
        f"error: connection test failed at TCP connect: connection_failed: connection "
        f"refused by 127.0.0.1:{port}; account 'smtp1' was created and kept\n"
        "hint: fix it with: mail-proxy main acme accounts update smtp1 …, then retest with: "
        "mail-proxy main acme accounts test smtp1\n")
    assert cli("main", "acme", "accounts", "show", "smtp1").code == 0

    r = cli("main", "acme", "accounts", "add", "smtp2", "--host", "127.0.0.1", "--port",
            str(port), "--tls-mode", "none", "--test", "--json")
    assert r.code == 1 and "was created and kept" in r.err
    doc = json.loads(r.out)
    assert doc["created"] is True and doc["test"]["ok"] is False
