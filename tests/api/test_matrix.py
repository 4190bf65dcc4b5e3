"""api.md §2.2-2.4: every route of the table × {admin, own key, other tenant's key, expired
key, inactive tenant's key, no key}, asserting status and code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mail_proxy.api.openapi import template
from mail_proxy.api.routes import ROUTES
from tests.api.conftest import LiveServer

PRINCIPALS = ("admin", "own", "other", "expired", "inactive", "none")


@dataclass
class Case:
    method: str
    path: str
    access: str  # public | any | admin | own
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    admin: tuple[int, str | None] = (200, None)
    own: tuple[int, str | None] | None = None  # None: like admin
    setup: str | None = None  # name of a LiveServer seeding step (per principal)


def _tid() -> dict[str, str]:
    return {"tenant_id": "acme"}


CASES = [
    Case("GET", "/health", "public"),
    Case("GET", "/openapi.json", "public"),
    Case("GET", "/download/abc", "public", admin=(404, "link_not_found")),
    Case("GET", "/metrics", "admin"),
    Case("GET", "/status", "any"),
    Case("POST", "/commands/add-messages", "own", body={"tenant_id": "acme", "messages": []}),
    Case("POST", "/commands/delete-messages", "own", body={"tenant_id": "acme", "ids": ["x"]}),
    Case("POST", "/commands/retry-messages", "own", body={"tenant_id": "acme", "ids": ["x"]}),
    Case("POST", "/commands/cleanup-messages", "own", body=_tid()),
    Case("POST", "/commands/run-now", "own", body=_tid()),
    Case("POST", "/commands/suspend", "own", body={"tenant_id": "acme", "batch_code": "b1"}),
    Case("POST", "/commands/activate", "own", body={"tenant_id": "acme", "batch_code": "b1"}),
    Case("GET", "/messages", "own", _tid()),
    Case("GET", "/messages/nope", "own", _tid(), admin=(404, "message_not_found")),
    Case("GET", "/accounts", "own", _tid()),
    Case("GET", "/account/smtp1", "own", _tid()),
    Case("POST", "/account", "own", body={"tenant_id": "acme", "id": "new-{who}",
                                          "host": "smtp.example.com", "port": 587},
         admin=(201, None)),
    Case("PATCH", "/account/smtp1", "own", _tid(), body={"port": 2525}),
    Case("DELETE", "/account/tmp-{who}", "own", _tid(), setup="account"),
    Case("GET", "/tenants", "admin"),
    Case("POST", "/tenant", "admin", body={"id": "made-{who}"}, admin=(201, None)),
    Case("GET", "/tenant/acme", "own"),
    Case("PATCH", "/tenant/acme", "own", body={"name": "ACME Corp"}),
    Case("DELETE", "/tenant/doomed-{who}", "admin", setup="tenant"),
    Case("POST", "/tenant/keyed-{who}/api-key", "admin", setup="tenant", admin=(201, None)),
    Case("DELETE", "/tenant/keyed2-{who}/api-key", "admin", setup="tenant"),
    Case("GET", "/instance", "admin"),
    Case("PATCH", "/instance", "admin", body={"max_batch_messages": 1000}),
    Case("GET", "/command-log", "admin"),
    Case("GET", "/command-log/export", "admin"),
    Case("GET", "/suppressions", "own", _tid()),
    Case("POST", "/suppressions", "own", body={"tenant_id": "acme",
                                              "address": "{who}@example.com"},
         admin=(201, None)),
    Case("DELETE", "/suppressions/gone@example.com", "own", _tid()),
]


def expected(case: Case, who: str) -> tuple[int, str | None]:
    if case.access == "public":
        return case.admin
    if who == "none":
        return 401, "missing_token"
    if who == "expired":
        return 401, "expired_token"
    if who == "inactive":
        return 403, "tenant_inactive"
    if who == "admin" or case.access == "any":
        return case.admin
    if case.access == "admin":
        return 403, "admin_required"
    if who == "other":
        return 403, "tenant_mismatch"
    return case.own or case.admin


def token_of(live: LiveServer, who: str) -> str | None:
    return {"admin": live.admin_token, "own": live.keys["acme"], "other": live.keys["other"],
            "expired": live.keys["late"], "inactive": live.keys["sleepy"]}.get(who)


def _fill(value: Any, who: str) -> Any:
    if isinstance(value, str):
        return value.replace("{who}", who)
    if isinstance(value, dict):
        return {k: _fill(v, who) for k, v in value.items()}
    return value


def _setup(live: LiveServer, case: Case, path: str) -> None:
    if case.setup == "account":
        answer = live.call("POST", "/account", live.admin_token, json={
            "tenant_id": "acme", "id": path.rsplit("/", 1)[-1], "host": "h.example.com",
            "port": 25})
    else:
        answer = live.call("POST", "/tenant", live.admin_token, json={"id": path.split("/")[2]})
    assert answer.status_code in (200, 201), answer.text


def test_cases_cover_every_route() -> None:
    """The matrix walks the whole route table (with {id} filled in)."""
    def shape(path: str) -> str:
        parts = path.split("/")
        return "/".join("*" if p.startswith("{") or "-{who}" in p or p in (
            "abc", "nope", "smtp1", "acme", "gone@example.com") else p for p in parts)

    walked = {(c.method, shape(c.path)) for c in CASES}
    table = {(m, shape(template(p))) for p, methods, _ in ROUTES for m in methods}
    assert walked == table


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_permission(live: LiveServer, client: Any, case: Case, who: str) -> None:
    path = _fill(case.path, who)
    if case.setup:
        _setup(live, case, path)
    headers = {}
    token = token_of(live, who)
    if token is not None:
        headers["X-API-Token"] = token
    answer = await client.request(case.method, path, params=case.params, headers=headers,
                                  json=_fill(case.body, who) if case.body is not None else None)
    status, code = expected(case, who)
    assert answer.status_code == status, answer.text
    if path not in ("/metrics", "/openapi.json") or status != 200:
        body = answer.json()
        assert body["ok"] is (status < 400)
        if code is not None:
            assert body["code"] == code, body
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
