"""api.md §1.3-1.4: every bad request answers JSON with the documented status and code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tests.api.conftest import LiveServer


def admin(live: LiveServer, **extra: str) -> dict[str, str]:
    return {"X-API-Token": live.admin_token, **extra}


async def test_malformed_json(live: LiveServer, client: Any) -> None:
    answer = await client.post("/tenant", content=b'{"id": ', headers=admin(
        live, **{"Content-Type": "application/json"}))
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_json"


async def test_text_that_is_not_unicode_is_invalid_json(live: LiveServer, client: Any) -> None:
    """Half of a surrogate pair, escaped or encoded, has no UTF-8 form: nothing could store
    it (it once reached SQLite and answered 500), so the body is refused as it arrives."""
    own = {"X-API-Token": live.keys["acme"], "Content-Type": "application/json"}
    for body in (b'{"name": "half \\ud800 pair"}', b'{"name": "low \\udc00"}',
                 b'{"name": "encoded \xed\xa0\x80"}', b'{"\\ud800": 1}'):
        answer = await client.patch("/tenant/acme", content=body, headers=own)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_json"), body
    paired = await client.patch("/tenant/acme", headers=own,
                                content=b'{"name": "ACME \\ud83d\\ude00"}')
    assert paired.status_code == 200, paired.text
    check = await client.get("/tenant/acme", headers=own)
    assert check.json()["tenant"]["name"] == "ACME \U0001F600"


async def test_json_python_cannot_hold_is_invalid_json(live: LiveServer, client: Any) -> None:
    """Nesting past the parser's recursion and numbers past int or float range once
    answered 500 (RecursionError, ValueError), from the handler or from the command log."""
    own = admin(live, **{"Content-Type": "application/json"})
    for body in (b'{"large_file_config": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001,
                 b"[" * 100_000 + b"]" * 100_000,
                 b'{"name": ' + b"9" * 5_000 + b"}", b'{"name": 1e400}'):
        answer = await client.patch("/tenant/acme", content=body, headers=own)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_json"), body[:40]
    # deep, but within what the parser reads: the usual field-by-field answer
    deep = b'{"large_file_config": ' + b'{"a": ' * 600 + b"1" + b"}" * 601
    answer = await client.patch("/tenant/acme", content=deep, headers=own)
    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error")


async def test_wrong_content_type(live: LiveServer, client: Any) -> None:
    answer = await client.post("/tenant", content=b"id=x", headers=admin(
        live, **{"Content-Type": "text/plain"}))
    assert (answer.status_code, answer.json()["code"]) == (415, "unsupported_media_type")


async def test_array_body(live: LiveServer, client: Any) -> None:
    answer = await client.post("/account", json=[1, 2], headers=admin(live))
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_body")


async def test_unknown_fields_listed_all(live: LiveServer, client: Any) -> None:
    for token in (live.admin_token, live.keys["acme"]):
        answer = await client.patch("/tenant/acme", json={"bogus": 1, "nope": 2},
                                    headers={"X-API-Token": token})
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["code"] == "validation_error"
        assert {(d["field"], d["code"]) for d in body["detail"]} == {
            ("bogus", "unknown_field"), ("nope", "unknown_field")}


async def test_bad_query_parameters(live: LiveServer, client: Any) -> None:
    cases = [("GET", "/tenants", {"active_only": "maybe"}),
             ("GET", "/command-log", {"limit": "5000"}),
             ("GET", "/command-log", {"cursor": "@@@"}),
             ("GET", "/messages", {"tenant_id": "acme", "limit": "x"}),
             ("DELETE", "/account/smtp1", {"tenant_id": "acme", "force": "yes"})]
    for method, path, params in cases:
        answer = await client.request(method, path, params=params, headers=admin(live))
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), path


async def test_missing_tenant_for_admin(live: LiveServer, client: Any) -> None:
    answer = await client.get("/account/smtp1", headers=admin(live))
    assert (answer.status_code, answer.json()["code"]) == (400, "missing_parameter")


async def test_conflicting_credentials(live: LiveServer, client: Any) -> None:
    answer = await client.get("/status", headers={"X-API-Token": live.admin_token,
                                                  "Authorization": "Bearer something-else"})
    assert (answer.status_code, answer.json()["code"]) == (400, "conflicting_credentials")
    same = await client.get("/status", headers={"Authorization": f"bearer {live.admin_token}"})
    assert same.status_code == 200


async def test_unknown_route_and_method(live: LiveServer, client: Any) -> None:
    answer = await client.get("/nowhere")
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    answer = await client.put("/tenant/acme", headers=admin(live))
    assert (answer.status_code, answer.json()["code"]) == (405, "method_not_allowed")
    assert set(answer.headers["allow"].split(", ")) >= {"GET", "PATCH", "DELETE"}


async def test_request_id_echoed(live: LiveServer, client: Any) -> None:
    answer = await client.get("/health", headers={"X-Request-ID": "trace-42"})
    assert answer.headers["x-request-id"] == "trace-42"


async def test_body_too_large(live: LiveServer, client: Any) -> None:
    answer = await client.patch("/instance", json={"max_request_bytes": 1024},
                                headers=admin(live))
    assert answer.status_code == 200, answer.text
    try:
        big = {"id": "big", "name": "x" * 2000}
        answer = await client.post("/tenant", json=big, headers=admin(live))
        assert (answer.status_code, answer.json()["code"]) == (413, "body_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: checked while read
            for _ in range(4):
                yield b" " * 600

        answer = await client.post("/tenant", content=chunks(), headers=admin(
            live, **{"Content-Type": "application/json"}))
        assert (answer.status_code, answer.json()["code"]) == (413, "body_too_large")
    finally:
        await client.patch("/instance", json={"max_request_bytes": None}, headers=admin(live))


async def test_invalid_suppression_address_is_400(live: LiveServer, client: Any) -> None:
    answer = await client.delete("/suppressions/not-an-address", params={"tenant_id": "acme"},
                                 headers=admin(live))
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter")


def test_storage_failures_answer_a_sentence_and_log_the_cause(
        caplog: Any, monkeypatch: Any) -> None:
    """The database's own text (a PostgreSQL deadlock names process ids and lock types) went
    to the client and not to the worker log; now the reverse, one log line per interval."""
    import json as _json
    import logging

    from mail_proxy.api import errors
    from mail_proxy.store.errors import StoreUnavailable

    monkeypatch.setitem(errors._storage_log, "at", float("-inf"))
    cause = "database error: DeadlockDetectedError: deadlock detected DETAIL: Process 4242"
    with caplog.at_level(logging.WARNING, logger="mail_proxy.api"):
        answers = [errors.from_exception(StoreUnavailable(cause)) for _ in range(3)]
    for answer in answers:
        body = _json.loads(bytes(answer.body))
        assert answer.status_code == 503 and body["code"] == "storage_unavailable"
        assert "4242" not in body["error"] and "retry later" in body["error"]
    logged = [r.getMessage() for r in caplog.records if "storage_unavailable" in r.getMessage()]
    assert len(logged) == 1 and "Process 4242" in logged[0]
