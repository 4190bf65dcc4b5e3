"""``tenants`` commands in-process: exact output, --json, exit codes, command_log rows."""

from __future__ import annotations

import getpass
import json
from typing import Any

from mail_proxy.instance.config import ProcessConfig


def test_add_list_show_update_delete(cli: Any, instance: ProcessConfig) -> None:
    r = cli("main", "tenants", "add", "acme", "--name", "Acme", "--base-url",
            "https://app.acme.test", "--auth", "bearer", "--auth-token", "-", "--json",
            stdin="tok-very-secret-123\n")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["ok"] is True and doc["created"] is True
    assert doc["tenant"]["client_auth"] == {"method": "bearer", "has_token": True}
    key = doc["api_key"]
    assert isinstance(key, str) and len(key) > 30
    assert "tok-very-secret-123" not in r.text

    r = cli("main", "tenants", "add", "acme")
    assert (r.code, r.err.splitlines()[0]) == (1, "error: tenant 'acme' already exists")

    r = cli("main", "tenants", "list")
    assert r.code == 0
    assert [line.rstrip() for line in r.out.splitlines()] == [
        "ID    NAME  ACTIVE  BASE URL               ACCOUNTS  QUEUED  API KEY",
        "acme  Acme  yes     https://app.acme.test  0         0       yes"]

    r = cli("main", "tenants", "update", "acme", "--rate-per-hour", "100", "--inactive")
    assert (r.code, r.out) == (0, "updated tenant 'acme'\n")
    r = cli("main", "tenants", "update", "acme", "--rate-per-day", "900")
    r = cli("main", "tenants", "show", "acme", "--json")
    tenant = json.loads(r.out)["tenant"]
    assert tenant["rate_limits"] == {"per_minute": None, "per_hour": 100, "per_day": 900}
    assert tenant["active"] is False
    r = cli("main", "tenants", "list", "--active-only", "--json")
    assert json.loads(r.out) == {"ok": True, "tenants": []}

    r = cli("main", "tenants", "delete", "acme")  # no terminal, no --yes
    assert (r.code, r.err) == (2, "error: confirmation needed (no terminal to ask; pass "
                                  "--yes)\n")
    r = cli("main", "tenants", "delete", "acme", "--yes", "--json")
    assert json.loads(r.out) == {"ok": True, "deleted": {"accounts": 0, "messages": 0}}
    r = cli("main", "tenants", "show", "acme")
    assert (r.code, r.err) == (1, "error: tenant 'acme' does not exist\n")


def test_validation_and_missing_values(cli: Any, instance: ProcessConfig) -> None:
    r = cli("main", "tenants", "add")
    assert (r.code, r.err) == (2, "error: missing value for ID (no terminal to ask; pass "
                                  "ID)\n")
    r = cli("main", "tenants", "add", "send")
    assert r.code == 1 and "reserved command word" in r.err
    r = cli("main", "tenants", "add", "acme", "--base-url", "ftp://x")
    assert r.code == 1 and r.err.startswith("error: --base-url:")
    r = cli("main", "tenants", "add", "acme", "--auth", "bearer")
    assert r.code == 1 and "--auth-token" in r.err
    assert "Traceback" not in r.err


def test_arguments_that_are_not_utf8_are_refused_by_position(cli: Any,
                                                              instance: ProcessConfig) -> None:
    """Bytes that are not UTF-8 arrive as lone surrogates (PEP 383); stored, they failed
    deep in the database driver as "unexpected UnicodeEncodeError"."""
    r = cli("main", "tenants", "add", "acme", "--name", "bad\udcffname", "--no-api-key")
    assert r.code == 2
    assert r.err.startswith("error: argument 6 ('bad\ufffdname') is not UTF-8 text\n")
    assert cli("main", "tenants", "list").out.count("acme") == 0
    r = cli("main", "tenants", "add", "acme", "--large-file-config", '{"a": "\\ud800"}',
            "--no-api-key")
    assert (r.code, r.err) == (2, "error: --large-file-config: not valid JSON\n")


def test_api_keys_signing_secret_and_command_log(cli: Any, instance: ProcessConfig) -> None:
    r = cli("main", "tenants", "add", "acme", "--no-api-key", "--base-url",
            "https://a.test", "--generate-signing-secret")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "created tenant 'acme'" and lines[1].startswith("Signing secret: ")
    assert "cannot be shown again" in r.err
    r = cli("main", "tenants", "show", "acme", "--json")
    shown = json.loads(r.out)["tenant"]
    assert shown["has_api_key"] is False and shown["has_signing_secret"] is True

    r = cli("main", "tenants", "api-key", "create", "acme", "--expires-in", "90d", "--json")
    answer = json.loads(r.out)
    assert answer["ok"] is True and answer["tenant_id"] == "acme"
    key = answer["api_key"]
    r = cli("main", "tenants", "list")
    assert r.out.splitlines()[1].split()[-1] == "yes"
    r = cli("main", "tenants", "api-key", "revoke", "acme")
    assert r.out == "API key of tenant 'acme' revoked\n"

    r = cli("main", "command-log", "list", "--json")
    rows = json.loads(r.out)["commands"]
    assert [row["endpoint"] for row in rows] == [
        "POST /tenant", "POST /tenant/{id}/api-key", "DELETE /tenant/{id}/api-key"]
    assert {row["actor"] for row in rows} == {f"cli:{getpass.getuser()}"}
    assert key not in r.out  # the key was masked in the stored answer
    assert rows[1]["response_body"]["api_key"] == "***"
