"""Prompts of cli.md §7 through a pseudo-terminal (pexpect) with the installed command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pexpect
import pytest

from mail_proxy.instance.config import ProcessConfig

pytestmark = pytest.mark.skipif(shutil.which("mail-proxy") is None,
                                reason="the mail-proxy console script is not installed")


def spawn(*args: str) -> pexpect.spawn:
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120"}
    return pexpect.spawn("mail-proxy", list(args), env=env, encoding="utf-8", timeout=10,
                         dimensions=(40, 120))


def run_json(*args: str) -> Any:
    r = subprocess.run(["mail-proxy", *args, "--json"], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def finished(child: pexpect.spawn, last_line: str) -> str:
    """Wait for ``last_line`` and the end of the command; return what it printed after the
    line, asserting exit 0."""
    child.expect(last_line)
    child.expect(pexpect.EOF)
    transcript = child.before or ""
    child.close()
    assert child.exitstatus == 0, transcript
    return transcript


def test_tenants_add_prompts_in_order(instance: ProcessConfig) -> None:
    child = spawn("main", "tenants", "add")
    child.expect("Tenant id")
    child.sendline("list")  # reserved: asked again
    child.expect("reserved command word")
    child.sendline("acme")
    child.expect("Display name")
    child.sendline("")  # default: the id
    child.expect("Application base URL")
    child.sendline("https://app.acme.test")
    child.expect("Sync path")
    child.sendline("")
    child.expect("Attachment path")
    child.sendline("")
    child.expect("Authentication for calls to the application")
    child.send("\x1b[B")  # down: bearer
    child.send("\r")
    child.expect("Bearer token")
    child.sendline("bearer-secret-456")
    child.expect("Generate a secret to sign delivery reports")
    child.sendline("y")
    child.expect("Create an API key for this tenant")
    child.sendline("n")
    child.expect("Create tenant 'acme'")
    child.sendline("y")
    transcript = finished(child, "created tenant 'acme'")
    assert "bearer-secret-456" not in transcript  # hidden input, not in the summary
    tenant = run_json("main", "tenants", "show", "acme")["tenant"]
    assert tenant["name"] == "acme" and tenant["client_base_url"] == "https://app.acme.test"
    assert tenant["client_auth"] == {"method": "bearer", "has_token": True}
    assert tenant["has_signing_secret"] is True and tenant["has_api_key"] is False


def test_accounts_add_hidden_password_and_ctrl_c(instance: ProcessConfig, cli: Any) -> None:
    assert cli("main", "tenants", "add", "acme").code == 0
    child = spawn("main", "acme", "accounts", "add", "--max-connections", "4")
    child.expect("Account id")
    child.sendline("smtp1")
    child.expect("SMTP host")
    child.sendline("smtp.example.com")
    child.expect("Port")
    child.sendline("")  # 587
    child.expect("TLS mode")
    child.send("\r")  # default starttls
    child.expect("Username")
    child.sendline("mailer")
    child.expect("Password")
    child.sendline("hidden-pass-789")
    child.expect("Messages per minute")
    child.sendline("")
    child.expect("Messages per hour")
    child.sendline("100")
    child.expect("Messages per day")
    child.sendline("")
    child.expect("When a limit is reached")
    child.send("\r")
    child.expect("default account")
    child.sendline("y")
    child.expect("Test the connection now")
    child.sendline("n")
    child.expect("Create account 'smtp1'")
    child.sendline("y")
    transcript = finished(child, "created account 'smtp1'")
    assert "hidden-pass-789" not in transcript
    account = run_json("main", "acme", "accounts", "show", "smtp1")["account"]
    assert (account["port"], account["tls_mode"], account["max_connections"]) == (
        587, "starttls", 4)
    assert account["has_password"] and account["is_default"]
    assert account["limit_per_hour"] == 100 and account["limit_per_minute"] is None

    child = spawn("main", "acme", "accounts", "add")
    child.expect("Account id")
    child.sendcontrol("c")
    child.expect("interrupted")  # one line says why it stopped (CLI hunt: it said nothing)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 or child.signalstatus is not None
    assert [a["id"] for a in run_json("main", "acme", "accounts", "list")["accounts"]] == [
        "smtp1"]

    child = spawn("main", "acme", "accounts", "add")  # Ctrl-D says so as well (CLI hunt)
    child.expect("Account id")
    child.sendcontrol("d")
    child.expect("interrupted: nothing was written")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130


def test_defaults_are_shown_not_pre_typed(instance: ProcessConfig, cli: Any) -> None:
    """Typing an answer replaces the default: it used to be pre-filled as editable text, so
    typing a name appended to the id (``tty1TTY One``) and a port to 587 (``5872525``)."""
    child = spawn("main", "tenants", "add", "--base-url", "", "--no-api-key", "--yes")
    child.expect("Tenant id")
    child.sendline("tty1")
    child.expect_exact("Display name (tty1)")
    child.sendline("TTY One")
    finished(child, "created tenant 'tty1'")
    assert run_json("main", "tenants", "show", "tty1")["tenant"]["name"] == "TTY One"

    child = spawn("main", "tty1", "accounts", "add", "smtp1", "--host", "smtp.example.com",
                  "--user", "", "--max-connections", "2", "--limit-per-minute", "0",
                  "--limit-per-hour", "0", "--no-default", "--no-test", "--yes")
    child.expect_exact("Port (587)")
    child.sendline("2525")
    child.expect("TLS mode")
    child.send("\r")
    child.expect_exact("Messages per day (0 = unlimited; default 0)")
    child.sendline("")
    finished(child, "created account 'smtp1'")
    account = run_json("main", "tty1", "accounts", "show", "smtp1")["account"]
    assert (account["port"], account["limit_per_day"]) == (2525, None)


def test_a_bad_host_is_refused_at_its_prompt(instance: ProcessConfig, cli: Any) -> None:
    """The host is checked when it is typed, as the id is, not after every other prompt."""
    assert cli("main", "tenants", "add", "acme").code == 0
    child = spawn("main", "acme", "accounts", "add", "smtp1", "--port", "2525",
                  "--tls-mode", "none", "--user", "", "--max-connections", "2",
                  "--limit-per-minute", "0", "--limit-per-hour", "0", "--limit-per-day", "0",
                  "--no-default", "--no-test", "--yes")
    child.expect("SMTP host")
    child.sendline("smtp example.com")
    child.expect("must be a host name or an IP address")
    child.expect("SMTP host")
    child.sendline("smtp.example.com")
    finished(child, "created account 'smtp1'")
    assert run_json("main", "acme", "accounts", "show", "smtp1")["account"]["host"] == (
        "smtp.example.com")


def test_a_bad_sync_path_is_refused_at_its_prompt(instance: ProcessConfig, cli: Any) -> None:
    child = spawn("main", "tenants", "add", "tty2", "--name", "T", "--base-url",
                  "https://app.example.test", "--attachment-path", "/att", "--auth", "none",
                  "--signing-secret", "", "--no-api-key", "--yes")
    child.expect("Sync path")
    child.sendline("sync here")
    child.expect("must start with '/' and contain no spaces")
    child.expect("Sync path")
    child.sendline("/sync")
    finished(child, "created tenant 'tty2'")
    assert run_json("main", "tenants", "show", "tty2")["tenant"]["client_sync_path"] == "/sync"


TWO_QUESTIONS = ("from mail_proxy.cli import prompts\n"
                 "first = prompts.confirm('First?', default=True)\n"
                 "second = prompts.confirm('Second?', default=True)\n"
                 "print('ANSWERS', first, second)\n")


def test_a_typed_no_and_enter_answers_one_question_only() -> None:
    """"n" then Enter at a yes/no question: the "n" used to answer at once and the Enter
    reached the next question, accepting its default, so the summary's "Create account?"
    after "Test the connection now?" was answered yes unasked (docs audit, 2026-11-25)."""
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(sys.executable, ["-c", TWO_QUESTIONS], env=env, encoding="utf-8",
                          timeout=10, dimensions=(40, 120))
    for question in ("First", "Second"):
        child.expect(question)
        time.sleep(0.3)  # the question is drawn and reading, as when a person answers
        child.send("n")
        time.sleep(0.1)
        child.send("\r")  # what the Enter key sends
    child.expect(r"ANSWERS (\w+) (\w+)")
    assert child.match.groups() == ("False", "False")
    child.expect(pexpect.EOF)
    child.close()


def test_no_input_on_a_terminal_says_so(instance: ProcessConfig) -> None:
    """CLI hunt: with --no-input on a terminal the error said "no terminal to ask"."""
    child = spawn("main", "tenants", "add", "--no-input")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "missing value for ID (--no-input; pass ID)" in (child.before or "")
