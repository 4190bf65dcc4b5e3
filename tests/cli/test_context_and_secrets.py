"""The real ``mail-proxy`` command on the edges the QA pass found: ids with a final newline,
a context tenant that does not exist, secrets read from stdin or a terminal, negative or NaN
durations, completion of secondary flags, settings and ``use inst/tenant``, and accounts
created with the same stored defaults as through the API."""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any

import pexpect
import pytest

from mail_proxy.instance import paths
from mail_proxy.instance.config import ProcessConfig, create_instance
from tests.cli.conftest import free_port

ACCOUNT = ("--host", "127.0.0.1", "--port", "2526", "--tls-mode", "none", "--no-test")


def tenant_ids(cli: Any) -> list[str]:
    r = cli("main", "tenants", "list", "--json")
    assert r.code == 0, r.err
    return [t["id"] for t in json.loads(r.out)["tenants"]]


def account_ids(cli: Any) -> list[str]:
    r = cli("main", "acme", "accounts", "list", "--json")
    assert r.code == 0, r.err
    return [a["id"] for a in json.loads(r.out)["accounts"]]


# --- A: a final newline is part of the value -----------------------------------------------

def test_ids_and_hosts_with_a_final_newline_are_refused(cli: Any, tenant: str) -> None:
    r = cli("main", "tenants", "add", "--no-api-key", "--name", "X", "--", "tnl\n")
    assert r.code == 1 and "tenant id" in r.err, r.text
    assert tenant_ids(cli) == ["acme"]
    r = cli("main", "acme", "accounts", "add", *ACCOUNT, "--", "anl\n")
    assert r.code == 1 and "account id" in r.err, r.text
    r = cli("main", "acme", "accounts", "add", "anl", "--host", "smtp.x.test\n", "--port", "25",
            "--tls-mode", "none", "--no-test")
    assert r.code == 1 and "--host" in r.err, r.text
    r = cli("main", "tenants", "update", "acme", "--base-url", "https://app.acme.test\n")
    assert r.code == 1 and "--base-url" in r.err, r.text
    assert account_ids(cli) == []


# --- B: the context tenant must exist, as a tenant named on the command line ---------------

def test_a_context_tenant_that_does_not_exist_is_an_error(
        cli: Any, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    named = cli("main", "ghost", "messages", "list")
    assert (named.code, named.err.splitlines()[0]) == (
        1, "error: tenant 'ghost' not found in instance 'main'")
    monkeypatch.setenv("GMP_TENANT", "ghost")
    for argv in (["main", "messages", "list"], ["main", "messages", "retry", "m1"],
                 ["main", "messages", "delete", "m1", "--yes"], ["main", "send", "x.eml"],
                 ["messages", "list"]):
        r = cli(*argv)
        assert r.code == 1, (argv, r.text)
        assert "error: tenant 'ghost' not found in instance 'main'" in r.err, (argv, r.err)
        assert r.out == "", argv
    monkeypatch.setenv("GMP_TENANT", "acme")
    assert cli("main", "messages", "list").code == 0


def test_a_mistyped_gmp_instance_never_falls_back_to_another_instance(
        cli: Any, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("use", "main/acme").code == 0
    monkeypatch.setenv("GMP_INSTANCE", "mian")
    for argv in (["messages", "list"], ["tenants", "list"], ["current"]):
        r = cli(*argv)
        assert r.code == 3 and "instance 'mian'" in r.err and "not found" in r.err, (argv,
                                                                                    r.text)
        assert r.out == "", argv
    monkeypatch.setenv("GMP_INSTANCE", "main")
    assert cli("messages", "list").code == 0


def test_a_tenant_deleted_after_use_is_not_an_empty_queue(cli: Any, tenant: str) -> None:
    assert cli("use", "main/acme").code == 0
    assert cli("messages", "list").code == 0
    assert cli("main", "tenants", "delete", "acme", "--yes").code == 0
    r = cli("messages", "list")
    assert (r.code, r.out) == (1, ""), r.text
    assert "tenant 'acme' not found in instance 'main'" in r.err
    paths.write_current("main", "ghost")
    r = cli("main", "messages", "retry", "m1")
    assert r.code == 1 and "retried" not in r.out, r.text


# --- C: secrets from stdin ----------------------------------------------------------------

def test_a_secret_flag_with_nothing_on_stdin_is_refused(cli: Any, tenant: str) -> None:
    r = cli("main", "acme", "accounts", "add", "a2", *ACCOUNT, "--user", "u",
            "--password", "-", stdin="")
    assert (r.code, r.err.strip()) == (2, "error: --password -: nothing on stdin"), r.text
    assert account_ids(cli) == []
    r = cli("main", "tenants", "update", "acme", "--auth", "bearer", "--auth-token", "-",
            stdin="\n")
    assert (r.code, r.err.strip()) == (2, "error: --auth-token -: nothing on stdin"), r.text
    r = cli("main", "config", "set", "bounce_imap_password", "-", stdin="")
    assert r.code == 2 and "bounce_imap_password -: nothing on stdin" in r.err, r.text
    # one line is still read as before
    r = cli("main", "acme", "accounts", "add", "a2", *ACCOUNT, "--user", "u",
            "--password", "-", stdin="s3cret\nrest\n")
    assert r.code == 0, r.text
    shown = json.loads(cli("main", "acme", "accounts", "show", "a2", "--json").out)
    assert shown["account"]["has_password"] is True


@pytest.mark.skipif(shutil.which("mail-proxy") is None,
                    reason="the mail-proxy console script is not installed")
def test_a_secret_flag_on_a_terminal_is_asked_hidden(cli: Any, tenant: str) -> None:
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    child = pexpect.spawn("mail-proxy", ["main", "config", "set", "bounce_imap_password", "-"],
                          env=env, encoding="utf-8", timeout=10)
    child.expect("bounce_imap_password")  # a prompt, not a silent wait
    child.sendline("SECRETPW-on-tty")
    child.expect("bounce_imap_password = set")
    child.expect(pexpect.EOF)
    transcript = (child.before or "") + (child.after if isinstance(child.after, str) else "")
    child.close()
    assert child.exitstatus == 0, transcript
    assert "SECRETPW-on-tty" not in transcript  # typed without echo
    r = cli("main", "config", "show", "--json")
    assert json.loads(r.out)["instance"]["settings"]["has_bounce_imap_password"] is True


# --- D: durations are seconds from 0 upward -----------------------------------------------

@pytest.mark.parametrize("argv", [
    ["start", "w1", "--wait", "-5"], ["start", "w1", "--wait", "nan"],
    ["restart", "ghost", "--wait", "-1"], ["restart", "ghost", "--timeout", "nan"],
    ["stop", "main", "--timeout", "-1"], ["stop", "--all", "--timeout", "nan"]])
def test_negative_or_nan_durations_are_usage_errors(
        cli: Any, instance: ProcessConfig, argv: list[str]) -> None:
    busy = create_instance("busy", "127.0.0.1", free_port(), None)
    # A start or restart that got past its options must fail at once, so that the old
    # behaviour never launches a supervisor from a test: a taken port for start (exit 1),
    # an instance that does not exist for restart (exit 3).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", busy.port))
        sock.listen()
        r = cli(*argv, *(["--port", str(busy.port)] if argv[0] == "start" else []))
    flag = argv[-2]
    assert r.code == 2, r.text
    assert flag in r.err, r.err
    assert "w1" not in paths.instance_names()


# --- E: completion ------------------------------------------------------------------------

def complete(cli: Any, *words: str) -> list[str]:
    r = cli("__complete", *words)
    assert r.code == 0, r.text
    return r.out.split()


def test_completion_offers_secondary_flags_settings_and_context_tenants(
        cli: Any, tenant: str) -> None:
    assert cli("main", "tenants", "add", "beta", "--no-api-key").code == 0
    assert "--no-api-key" in complete(cli, "main", "tenants", "add", "--no")
    assert "--inactive" in complete(cli, "main", "tenants", "update", "--in")
    assert {"--no-default", "--no-pec", "--no-test"} <= set(
        complete(cli, "main", "acme", "accounts", "add", "--no-"))
    names = complete(cli, "main", "config", "set", "")
    assert {"smtp_max_connections", "bounce_imap_password", "port", "log_level"} <= set(names)
    assert complete(cli, "main", "config", "reset", "smtp_max") == ["smtp_max_connections",
                                                                     "smtp_max_lifetime"]
    assert complete(cli, "main", "config", "set", "port", "") == []
    assert complete(cli, "use", "main/") == ["main/acme", "main/beta"]
    assert complete(cli, "use", "main/b") == ["main/beta"]
    assert complete(cli, "use", "ma") == ["main"]
    assert cli("use", "main").code == 0
    assert complete(cli, "use", "/") == ["/acme", "/beta"]
    assert "acme" in complete(cli, "")  # a tenant id of the context instance is a first word


# --- F: one account default for both ways in ----------------------------------------------

def test_a_cli_account_follows_the_instance_connection_setting(cli: Any, tenant: str) -> None:
    r = cli("main", "acme", "accounts", "add", "a1", *ACCOUNT, "--json")
    assert r.code == 0, r.text
    assert json.loads(r.out)["account"]["max_connections"] is None  # api.md §6.1: null → 3
    r = cli("main", "acme", "accounts", "add", "a2", *ACCOUNT, "--max-connections", "3",
            "--json")
    assert json.loads(r.out)["account"]["max_connections"] == 3  # asked for: kept
