"""The CLI writes tenants through the same checks as the API: a credential that cannot go in
an HTTP header is refused before it is stored (QA walkthrough 2026-11-24)."""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.instance.config import ProcessConfig


def test_tenant_credentials_must_fit_an_http_header(cli: Any, instance: ProcessConfig,
                                                    tenant: str) -> None:
    r = cli("main", "tenants", "update", "acme", "--base-url", "https://app.acme.test",
            "--auth", "bearer", "--auth-token", "-", stdin="s3cr3t\u2026token\n")
    assert r.code == 1, r.text
    assert "--auth-token" in r.err and "visible ASCII" in r.err
    assert "s3cr3t" not in r.text and "Traceback" not in r.text

    r = cli("main", "tenants", "add", "beta", "--auth", "basic", "--auth-user", "app:1",
            "--auth-password", "-", "--no-api-key", stdin="pw\n")
    assert r.code == 1, r.text
    assert "--auth-user" in r.err and "':'" in r.err
    assert cli("main", "tenants", "show", "beta").code == 1  # nothing was stored

    r = cli("main", "tenants", "update", "acme", "--auth", "bearer", "--auth-token", "-",
            stdin="acme-sync-7f3a9c1e5b2d4f60\n")
    assert r.code == 0, r.text
    r = cli("main", "tenants", "show", "acme", "--json")
    assert json.loads(r.out)["tenant"]["client_auth"] == {"method": "bearer", "has_token": True}


def test_a_password_alone_means_basic_auth_and_names_what_is_missing(
        cli: Any, instance: ProcessConfig, tenant: str) -> None:
    """``update --auth-password P`` said "nothing to change" (a flag was given); it reads
    as basic auth, which client_auth replaces whole, so the user is asked for."""
    r = cli("main", "tenants", "update", "acme", "--auth-password", "NewPw9")
    assert r.code == 1 and "--auth-user" in r.err and "nothing to change" not in r.err, r.text
    assert "NewPw9" not in r.text
    r = cli("main", "tenants", "update", "acme", "--auth-user", "app", "--auth-password", "NewPw9")
    assert r.code == 0, r.text
    shown = json.loads(cli("main", "tenants", "show", "acme", "--json").out)["tenant"]
    assert shown["client_auth"] == {"method": "basic", "user": "app", "has_password": True}
