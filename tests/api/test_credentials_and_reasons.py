"""Findings of the QA walkthrough (2026-11-24), against a real worker over HTTP:
credentials that cannot go in an HTTP header are refused where they are written, and
rejection reasons name the real problem in the client's own (JSON) spelling."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.api.conftest import LiveServer

DOCS = Path(__file__).resolve().parents[2] / "docs"
BAD_TOKEN = "tok\u2026en"  # "…", as in the example docs/reports.md once showed


def admin(live: LiveServer) -> dict[str, str]:
    return {"X-API-Token": live.admin_token}


def field_errors(answer: Any) -> dict[str, dict[str, str]]:
    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error"), answer.text
    return {d["field"]: d for d in answer.json()["detail"]}


async def test_tenant_credentials_must_fit_an_http_header(live: LiveServer, client: Any) -> None:
    own = {"X-API-Token": live.keys["acme"]}
    for headers in (admin(live), own):  # the tenant's own key may set client_auth too
        for token in (BAD_TOKEN, "two words", " leading-space", "caf\u00e9"):
            answer = await client.patch("/tenant/acme", headers=headers, json={
                "client_auth": {"method": "bearer", "token": token}})
            error = field_errors(answer)["client_auth.token"]
            assert error["code"] == "invalid_value"
            assert "visible ASCII" in error["message"]
            assert "Authorization header" in error["message"]
            assert token.strip() not in answer.text  # a secret is never quoted back
    answer = await client.post("/tenant", headers=admin(live), json={
        "id": "hdr-new", "client_auth": {"method": "bearer", "token": BAD_TOKEN}})
    assert "client_auth.token" in field_errors(answer)
    assert (await client.get("/tenant/hdr-new", headers=admin(live))).status_code == 404

    answer = await client.patch("/tenant/acme", headers=admin(live), json={
        "client_auth": {"method": "basic", "user": "app:1", "password": "pw"}})
    error = field_errors(answer)["client_auth.user"]
    assert error["code"] == "invalid_value" and "':'" in error["message"]

    # What a header can carry is still accepted: every visible ASCII character in a token,
    # any text in basic user and password (sent base64-encoded as UTF-8), ':' in a password.
    for auth in ({"method": "bearer", "token": "a-Z_0.9~+/=!#$%&'*^`|" + '"(),;<>?@[]{}\\'},
                 {"method": "basic", "user": "J\u00fcrgen", "password": "p\u00e4ss:w\u00f6rd"}):
        answer = await client.patch("/tenant/acme", headers=admin(live),
                                    json={"client_auth": auth})
        assert answer.status_code == 200, answer.text
    answer = await client.patch("/tenant/acme", headers=admin(live),
                                json={"client_auth": {"method": "none"}})
    assert answer.status_code == 200, answer.text


def message(i: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"qa-{i}", "from": "Sender <sender@acme.test>", "to": ["ann@example.com"],
            "subject": "Hello", "body": "Hi", **fields}


async def add(client: Any, live: LiveServer, *messages: dict[str, Any],
              tenant_id: str = "acme") -> dict[int, dict[str, Any]]:
    answer = await client.post("/commands/add-messages", headers=admin(live),
                               json={"tenant_id": tenant_id, "messages": list(messages)})
    assert answer.status_code in (200, 400), answer.text
    return {r["index"]: r for r in answer.json()["rejected"]}


async def test_attachment_credentials_must_fit_an_http_header(live: LiveServer,
                                                              client: Any) -> None:
    url = "https://files.acme.test/inv/1.pdf"
    rejected = await add(client, live, *(message(i, attachments=[
        {"filename": "a.pdf", "storage_path": url, "auth": auth}]) for i, auth in enumerate([
            {"method": "bearer", "token": BAD_TOKEN},
            {"method": "bearer", "token": "tok en"},
            {"method": "basic", "user": "app:1", "password": "pw"},
            {"method": "basic", "user": "J\u00fcrgen", "password": "p\u00e4ss"},
            {"method": "bearer", "token": "good-token"}])))
    assert set(rejected) == {0, 1, 2}
    for index in (0, 1):
        assert rejected[index]["code"] == "invalid_attachment"
        assert rejected[index]["field"] == "attachments[0].auth.token"
        assert "visible ASCII" in rejected[index]["reason"]
    assert BAD_TOKEN not in json.dumps(rejected[0]) and "tok en" not in rejected[1]["reason"]
    assert rejected[2]["field"] == "attachments[0].auth.user"
    assert "must not contain ':'" in rejected[2]["reason"]


async def test_reasons_show_values_as_json(live: LiveServer, client: Any) -> None:
    rejected = await add(client, live, message(0, priority=True), message(1, priority=False),
                         message(2, priority=[]), message(3, priority={"level": None}),
                         message(4, priority=1.5), message(5, priority="urgent"))
    shown = [rejected[i]["reason"].split(" is not a priority")[0] for i in range(6)]
    assert shown == ["'priority': true", "'priority': false", "'priority': []",
                     "'priority': {\"level\": null}", "'priority': 1.5", "'priority': 'urgent'"]
    assert all(r["code"] == "invalid_priority" for r in rejected.values())


async def test_an_overlong_message_id_is_said_to_be_too_long(live: LiveServer,
                                                            client: Any) -> None:
    long_251 = "<" + "x" * 240 + "@" + "y" * 8 + ">"
    assert len(long_251) == 251
    rejected = await add(client, live, message(0, message_id=long_251),
                         message(1, message_id="x" * 240 + "@" + "y" * 9),  # 252 with brackets
                         message(2, message_id="no-at-sign"),
                         message(3, message_id="<" + "x" * 239 + "@" + "y" * 8 + ">"))
    assert set(rejected) == {0, 1, 2}  # 250 characters is allowed
    assert rejected[0]["reason"] == ("'message_id': is too long: 251 characters with its "
                                     "angle brackets, at most 250")
    assert "252 characters" in rejected[1]["reason"]
    assert rejected[2]["reason"] == ("'message_id': 'no-at-sign' is not a Message-ID of the "
                                     "form <left@right>")


async def test_a_comma_in_an_unquoted_display_name_is_explained(live: LiveServer,
                                                                client: Any) -> None:
    rejected = await add(client, live, message(0, to=["Lee, Ann <ann@example.com>"]),
                         message(1, to="bob@example.com, Lee, Ann <ann@example.com>"),
                         message(2, **{"from": "Billing, Acme <billing@acme.test>"}),
                         message(3, to=["ann@example.com", "not an address"]),
                         message(4, to=['"Lee, Ann" <ann@example.com>']))
    assert set(rejected) == {0, 1, 2, 3}
    assert (rejected[0]["field"], rejected[0]["reason"]) == (
        "to[0]", "'to[0]': 'Lee' is not a valid e-mail address; a display name containing a "
                 "comma must be quoted: \"Lee, Ann\" <ann@example.com>")
    assert rejected[1]["field"] == "to" and "must be quoted" not in rejected[1]["reason"]
    assert rejected[2]["reason"].endswith('must be quoted: "Billing, Acme" <billing@acme.test>')
    assert rejected[3]["reason"] == "'to[1]': 'not an address' is not a valid e-mail address"


async def test_a_tenant_without_accounts_is_documented(live: LiveServer, client: Any) -> None:
    live.seed_tenant("acme2")
    rejected = await add(client, live, message(0), tenant_id="acme2")
    assert (rejected[0]["code"], rejected[0]["reason"]) == (
        "account_required", "'account_id': tenant 'acme2' has no account")
    text = (DOCS / "messages.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `account_not_found`"))
    assert re.search(r"no account at all", row), row
