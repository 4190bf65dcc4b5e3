"""Edges of the API contract a QA pass found answered other than api.md and the decisions
say (hunt of 2026-11-25): each is answered as documented now."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import LiveServer
from tests.api.test_hostile_requests import raw_exchange


@pytest.mark.parametrize("path", ["/command-log", "/suppressions"])
@pytest.mark.parametrize("limit", ["²", "２", "1" * 5000, " 5", "1_0"])
def test_a_limit_of_anything_but_plain_digits_is_400(live: LiveServer, path: str,
                                                     limit: str) -> None:
    # "²" passed str.isdigit() and then failed int(): a 500 with a traceback in the log
    answer = live.call("GET", path, live.admin_token, params={"tenant_id": "acme",
                                                              "limit": limit})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), limit
    assert answer.json()["detail"] == {"parameter": "limit"}


@pytest.mark.parametrize("path", ["/command-log", "/suppressions"])
def test_a_limit_of_plain_digits_still_works(live: LiveServer, path: str) -> None:
    answer = live.call("GET", path, live.admin_token, params={"tenant_id": "acme",
                                                              "limit": "2"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("since", ["1_795_567_000", "１７９５５６７０００", "1e9", "inf"])
def test_command_log_times_are_plain_decimal_numbers(live: LiveServer, since: str) -> None:
    answer = live.call("GET", "/command-log", live.admin_token, params={"since": since})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), since
    for good in ("1795567000", "1795567000.5", "0"):
        assert live.call("GET", "/command-log", live.admin_token,
                         params={"since": good}).status_code == 200, good


@pytest.mark.parametrize("how", [{"params": {"older_than_seconds": " 10"}},
                                 {"json": {"older_than_seconds": " 10 "}}])
def test_cleanup_age_with_blanks_is_400(live: LiveServer, how: dict[str, object]) -> None:
    answer = live.call("POST", "/commands/cleanup-messages", live.admin_token, **how)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter")


@pytest.mark.parametrize("code", ["a\u0085b", "a\u2028b", "a\x7fb"])
def test_suspend_refuses_a_batch_code_no_message_could_carry(live: LiveServer,
                                                             code: str) -> None:
    answer = live.call("POST", "/commands/suspend", live.keys["acme"],
                       json={"batch_code": code})
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["detail"]] == ["batch_code"]


def test_an_empty_tenant_id_is_a_missing_one(live: LiveServer) -> None:
    as_admin = live.call("POST", "/commands/delete-messages", live.admin_token,
                         json={"tenant_id": "", "ids": ["x"]})
    assert (as_admin.status_code, as_admin.json()["code"]) == (400, "missing_parameter")
    listed = live.call("GET", "/messages", live.admin_token, params={"tenant_id": ""})
    assert listed.status_code == 200  # the admin's list of every tenant, as with no parameter
    as_tenant = live.call("POST", "/commands/retry-messages", live.keys["acme"],
                          json={"tenant_id": "", "ids": ["nope"]})
    assert as_tenant.status_code == 200, as_tenant.text  # the key's own tenant
    suppression = live.call("POST", "/suppressions", live.keys["acme"],
                            json={"tenant_id": "", "address": "empty-tenant@x.test"})
    assert suppression.status_code in (200, 201), suppression.text


def test_run_now_for_an_unknown_tenant_is_404(live: LiveServer) -> None:
    answer = live.call("POST", "/commands/run-now", live.admin_token,
                       params={"tenant_id": "no-such-tenant"})
    assert (answer.status_code, answer.json()["code"]) == (404, "tenant_not_found")
    assert live.call("POST", "/commands/run-now", live.admin_token,
                     params={"tenant_id": "acme"}).status_code == 200
    assert live.call("POST", "/commands/run-now", live.admin_token).status_code == 200


def test_a_request_id_with_a_space_is_echoed(live: LiveServer) -> None:
    answer = live.call("GET", "/health", headers={"X-Request-ID": "job 42"})
    assert answer.headers["x-request-id"] == "job 42"


def test_integer_settings_accept_whole_floats(live: LiveServer) -> None:
    answer = live.call("PATCH", "/instance", live.admin_token, json={"lease_seconds": 90.0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["instance"]["settings"]["lease_seconds"] == 90
    bad = live.call("PATCH", "/instance", live.admin_token, json={"lease_seconds": 90.5})
    assert bad.status_code == 422
    live.call("PATCH", "/instance", live.admin_token, json={"lease_seconds": None})


@pytest.mark.parametrize("request_bytes", [
    b"FOO /status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /commands/run-now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
])
def test_requests_the_parser_refuses_get_a_json_400(live: LiveServer,
                                                    request_bytes: bytes) -> None:
    answer = raw_exchange(live, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert b"x-request-id: " in head.lower()
    assert json.loads(body)["code"] == "malformed_request"
    assert live.call("GET", "/health").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "::1",
                                  "localhost", "0.0.0.0"])
def test_a_tenant_key_cannot_point_an_account_at_a_private_host(live: LiveServer,
                                                               host: str) -> None:
    """Otherwise any tenant could make the worker connect to loopback, link-local or
    internal services and read their banners back in the error text (security hunt)."""
    created = live.call("POST", "/account", live.keys["acme"],
                        json={"id": "probe", "host": host, "port": 6379, "tls_mode": "none"})
    assert (created.status_code, created.json()["code"]) == (422, "validation_error"), created.text
    assert created.json()["detail"][0]["field"] == "host"
    assert created.json()["detail"][0]["code"] == "host_not_allowed"
    patched = live.call("PATCH", "/account/smtp1", live.keys["acme"], json={"host": host})
    assert patched.status_code == 422, patched.text
    pec = live.call("POST", "/account", live.keys["acme"],
                    json={"id": "pec", "host": "smtp.example.com", "port": 465, "is_pec": True,
                          "imap_host": host})
    assert [f["field"] for f in pec.json()["detail"]] == ["imap_host"], pec.text


def test_the_admin_and_allow_private_urls_may_set_private_hosts(live: LiveServer) -> None:
    admin = live.call("POST", "/account", live.admin_token,
                      json={"tenant_id": "acme", "id": "relay", "host": "127.0.0.1",
                            "port": 2525, "tls_mode": "none"})
    assert admin.status_code == 201, admin.text
    live.call("PATCH", "/instance", live.admin_token, json={"allow_private_urls": True})
    try:
        tenant = live.call("PATCH", "/account/relay", live.keys["acme"],
                           json={"host": "10.0.0.5"})
        assert tenant.status_code == 200, tenant.text
    finally:
        live.call("PATCH", "/instance", live.admin_token, json={"allow_private_urls": None})
        live.call("DELETE", "/account/relay", live.admin_token, params={"tenant_id": "acme"})
    reserved = live.call("PATCH", "/account/smtp1", live.keys["acme"],
                         json={"host": "198.51.100.7"})  # TEST-NET-2: not global, refused
    assert reserved.status_code == 422
    named = live.call("PATCH", "/account/smtp1", live.keys["acme"],
                      json={"host": "smtp.unresolvable.invalid"})
    assert named.status_code == 200, named.text  # no answer yet: it fails at delivery
    live.call("PATCH", "/account/smtp1", live.admin_token, params={"tenant_id": "acme"},
              json={"host": "smtp.example.com"})


def test_a_tenant_key_cannot_move_the_port_of_an_admin_account_on_a_private_host(
        live: LiveServer) -> None:
    """The admin's local relay: a new port on its host is a new destination (security
    hunt: a port-only PATCH turned the worker into a loopback port scanner)."""
    admin = live.call("POST", "/account", live.admin_token,
                      json={"tenant_id": "acme", "id": "relay", "host": "127.0.0.1",
                            "port": 2525, "tls_mode": "none", "is_pec": True,
                            "imap_host": "127.0.0.1", "imap_port": 993})
    assert admin.status_code == 201, admin.text
    try:
        for field in ("port", "imap_port"):
            moved = live.call("PATCH", "/account/relay", live.keys["acme"], json={field: 22})
            assert moved.status_code == 422, moved.text
            [error] = moved.json()["detail"]
            assert (error["field"], error["code"]) == (field, "host_not_allowed")
        stored = live.call("GET", "/account/relay", live.admin_token,
                           params={"tenant_id": "acme"}).json()["account"]
        assert (stored["port"], stored["imap_port"]) == (2525, 993)
        # other fields of the admin's account stay the tenant's to change, and a body that
        # repeats the stored port (a client sending the whole record back) is no move
        renamed = live.call("PATCH", "/account/relay", live.keys["acme"],
                            json={"batch_size": 10, "port": 2525, "imap_port": 993})
        assert renamed.status_code == 200, renamed.text
        assert live.call("PATCH", "/account/relay", live.admin_token,
                         params={"tenant_id": "acme"}, json={"port": 2526}).status_code == 200
    finally:
        live.call("DELETE", "/account/relay", live.admin_token, params={"tenant_id": "acme"})
    public = live.call("PATCH", "/account/smtp1", live.keys["acme"], json={"port": 2587})
    assert public.status_code == 200, public.text  # smtp.example.com: not resolvable here


def test_rejections_are_counted_for_their_tenant_and_routes_read_as_in_api_md(
        live: LiveServer) -> None:
    bad = {"id": "rej-1", "from": "a@acme.test", "to": ["not an address"], "subject": "s",
           "body": "b", "account_id": "smtp1"}
    answer = live.call("POST", "/commands/add-messages", live.keys["acme"],
                       json={"messages": [bad]})
    assert answer.status_code == 400, answer.text
    made_up = dict(bad, tenant_id="no-such-tenant")
    live.call("POST", "/commands/add-messages", live.admin_token, json={"messages": [made_up]})
    live.call("GET", "/messages/nope", live.keys["acme"])
    text = live.call("GET", "/metrics", live.admin_token).text
    assert 'gmp_rejected_total{code="invalid_address",tenant_id="acme"} 1.0' in text
    # a tenant that does not exist adds no series of its own
    assert 'tenant_id="no-such-tenant"' not in text
    assert 'route="/messages/{id}"' in text and "{id:path}" not in text


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("GET", "/messages/a%00b", {}),
    ("GET", "/messages", {"params": {"tenant_id": "acme", "cursor": "a\x00"}}),
    ("DELETE", "/suppressions/x%00@y.test", {}),
    ("POST", "/suppressions", {"json": {"address": "a\x00@x.test"}}),
    ("POST", "/commands/add-messages", {"json": {"messages": [
        {"id": "nul-1", "from": "a@acme.test", "to": ["b@example.com"], "subject": "s\x00",
         "body": "b"}]}}),
])
def test_nul_characters_are_refused_alike_on_every_backend(live: LiveServer, method: str,
                                                           path: str, kwargs: dict) -> None:
    """SQLite stored text holding NUL; PostgreSQL answered 500 (QA hunt of 2026-11-25)."""
    answer = live.call(method, path, live.keys["acme"], **kwargs)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] in ("invalid_parameter", "invalid_json")
    assert "NUL" in answer.json()["error"]


@pytest.mark.parametrize(("path", "body"), [
    ("/suppressions", {"tenant_id": "beta", "address": "x@example.com"}),
    ("/account", {"tenant_id": "beta", "id": "c1", "host": "smtp.example.com", "port": 587}),
])
def test_tenant_id_in_query_and_body_disagreeing_is_400_conflicting_parameters(
        live: LiveServer, path: str, body: dict[str, Any]) -> None:
    """api.md §1.1: a scalar given in both places with different values (POST /suppressions
    and POST /account answered 422 validation_error instead)."""
    answer = live.call("POST", path, live.admin_token, params={"tenant_id": "acme"}, json=body)
    assert (answer.status_code, answer.json()["code"]) == (400, "conflicting_parameters"), \
        answer.text


@pytest.mark.parametrize("route", ["/commands/delete-messages", "/commands/retry-messages"])
@pytest.mark.parametrize(("body", "code"), [
    ({}, "required"), ({"ids": "m1"}, "invalid_type"), ({"ids": {"m1": 1}}, "invalid_type"),
    ({"ids": []}, "invalid_value"),
])
def test_a_bad_ids_field_has_the_field_code_of_api_md(live: LiveServer, route: str,
                                                      body: dict[str, Any], code: str) -> None:
    """api.md §1.3 codes, as add-messages uses them for `messages` (spec hunt: every shape
    error said invalid_value)."""
    answer = live.call("POST", route, live.admin_token, json={"tenant_id": "acme", **body})
    assert answer.status_code == 422, answer.text
    assert [(d["field"], d["code"]) for d in answer.json()["detail"]] == [("ids", code)]


def test_a_tenant_key_cannot_take_a_stored_password_to_another_destination(
        live: LiveServer) -> None:
    """Security hunt: a tenant key moved an admin-provisioned account to a server of its
    own and the worker logged in there with the stored password (in clear text with
    tls_mode none). A move now needs the password in the same request."""
    admin = live.call("POST", "/account", live.admin_token,
                      json={"tenant_id": "acme", "id": "vault", "host": "smtp.example.com",
                            "port": 587, "user": "relayuser", "password": "s3cret-admin",
                            "is_pec": True, "imap_host": "imap.example.com"})
    assert admin.status_code == 201, admin.text
    try:
        for change in ({"host": "smtp.example.org"}, {"port": 2525}, {"tls_mode": "none"},
                       {"use_tls": False}, {"tls_verify": False}):
            moved = live.call("PATCH", "/account/vault", live.keys["acme"], json=change)
            assert moved.status_code == 422, (change, moved.text)
            [error] = moved.json()["detail"]
            assert (error["field"], error["code"]) == ("password", "password_required")
        # the IMAP login falls back to the SMTP password: its destination is guarded too
        imap = live.call("PATCH", "/account/vault", live.keys["acme"],
                         json={"imap_host": "imap.example.org"})
        assert [(e["field"], e["code"]) for e in imap.json()["detail"]] == [
            ("imap_password", "password_required")], imap.text
        # a replace (POST) that keeps the password by omission is a move as well
        replaced = live.call("POST", "/account", live.keys["acme"],
                             json={"id": "vault", "host": "smtp.example.org", "port": 587,
                                   "is_pec": True, "imap_host": "imap.example.com"})
        assert replaced.status_code == 422, replaced.text
        stored = live.call("GET", "/account/vault", live.admin_token,
                           params={"tenant_id": "acme"}).json()["account"]
        assert (stored["host"], stored["port"], stored["tls_mode"], stored["tls_verify"],
                stored["imap_host"]) == ("smtp.example.com", 587, "starttls", True,
                                         "imap.example.com")
        # the same values sent back, other fields, or the password given again: all fine
        same = live.call("PATCH", "/account/vault", live.keys["acme"],
                         json={"host": "smtp.example.com", "port": 587, "batch_size": 5})
        assert same.status_code == 200, same.text
        again = live.call("PATCH", "/account/vault", live.keys["acme"],
                          json={"host": "smtp.example.org", "password": "tenant-knows",
                                "imap_host": "imap.example.org", "imap_password": "x"})
        assert again.status_code == 200, again.text
        # the admin is trusted with every secret already
        admin_move = live.call("PATCH", "/account/vault", live.admin_token,
                               params={"tenant_id": "acme"}, json={"port": 2525})
        assert admin_move.status_code == 200, admin_move.text
    finally:
        live.call("DELETE", "/account/vault", live.admin_token, params={"tenant_id": "acme"})


@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/messages/a%0Ab", "message_not_found"),
    ("GET", "/account/a%0Ab", "account_not_found"),
])
def test_a_line_break_in_a_path_id_reaches_the_route(live: LiveServer, method: str, path: str,
                                                     code: str) -> None:
    """Security hunt: ``{id:path}`` did not match a decoded newline, so these fell through
    to "no such route" while the other routes said which resource was missing."""
    answer = live.call(method, path, live.keys["acme"])
    assert (answer.status_code, answer.json()["code"]) == (404, code), answer.text


def test_a_line_break_in_a_suppressed_address_reaches_the_route(live: LiveServer) -> None:
    answer = live.call("DELETE", "/suppressions/x%0Ay@example.com", live.keys["acme"])
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), answer.text
