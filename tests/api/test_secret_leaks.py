"""data.md §4.5: configured secrets never come back from any GET route, the command log or
the worker log (captured at debug level)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import LiveServer

SECRETS = {
    "account_password": "acct-pass-7f3a9c1e5b",
    "imap_password": "imap-pass-2d8e4f6a0c",
    "bearer_token": "client-bearer-9b1d3f5e7a2c4e6",
    "basic_password": "client-basic-4c6e8a0b2d",
    "signing_secret": "signing-secret-0123456789abcdef0123456789",
    "bounce_password": "bounce-pass-5e7a9c1d3f",
}


async def test_no_secret_leaks(live: LiveServer, client: Any) -> None:
    admin = {"X-API-Token": live.admin_token}
    calls = [
        ("POST", "/tenant", {"id": "vault", "signing_secret": SECRETS["signing_secret"],
                             "client_auth": {"method": "bearer",
                                             "token": SECRETS["bearer_token"]}}),
        ("POST", "/account", {"tenant_id": "vault", "id": "s1", "host": "smtp.example.com",
                              "port": 587, "user": "u", "password": SECRETS["account_password"],
                              "is_pec": True, "imap_host": "imap.example.com",
                              "imap_password": SECRETS["imap_password"]}),
        ("PATCH", "/tenant/vault", {"client_auth": {"method": "basic", "user": "app",
                                                    "password": SECRETS["basic_password"]}}),
        ("PATCH", "/instance", {"bounce_imap_password": SECRETS["bounce_password"]}),
    ]
    for method, path, body in calls:
        answer = await client.request(method, path, json=body, headers=admin)
        assert answer.status_code < 300, answer.text
        if path == "/tenant":
            live.keys["vault"] = answer.json()["api_key"]
    vault = {"X-API-Token": live.keys["vault"]}
    # A tenant key used for writes too, so its own rows are in the log.
    answer = await client.patch("/account/s1", json={"password": SECRETS["account_password"]},
                                headers=vault)
    assert answer.status_code == 200, answer.text
    secrets = [*SECRETS.values(), live.admin_token, *live.keys.values()]

    seen: list[str] = []
    for path, params, headers in [
        ("/health", {}, {}), ("/status", {}, admin), ("/metrics", {}, admin),
        ("/openapi.json", {}, {}), ("/tenants", {}, admin), ("/tenant/vault", {}, admin),
        ("/tenant/vault", {}, vault), ("/accounts", {}, admin),
        ("/accounts", {}, vault), ("/account/s1", {"tenant_id": "vault"}, admin),
        ("/account/s1", {}, vault), ("/messages", {}, admin), ("/instance", {}, admin),
        ("/command-log", {"limit": "1000"}, admin), ("/command-log/export", {}, admin),
        ("/suppressions", {}, vault), ("/download/x", {}, {}),
    ]:
        answer = await client.get(path, params=params, headers=headers)
        assert answer.status_code in (200, 404), (path, answer.text)
        seen.append(f"{path} {answer.headers} {answer.text}")
    assert '"has_password":true' in "".join(seen)  # the walk did reach the secrets' owners
    assert '"has_bounce_imap_password":true' in "".join(seen)
    assert live.log_path is not None
    log_text = live.log_path.read_text(encoding="utf-8")
    assert "listening on" in log_text  # the handler really captured the worker
    seen.append(log_text)
    everything = "\n".join(seen)
    for secret in secrets:
        assert secret not in everything, "a secret leaked"
