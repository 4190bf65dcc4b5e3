"""Requests a QA pass sent to a live worker that answered 500, stalled it, or answered
other than api.md says: each is answered as documented now."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from typing import Any

from mail_proxy.api.http_protocol import MAX_HEAD_BYTES
from tests.api.conftest import LiveServer


def admin(live: LiveServer) -> dict[str, str]:
    return {"X-API-Token": live.admin_token}


def raw_exchange(live: LiveServer, request: bytes, *, timeout: float = 10) -> bytes:
    """Send ``request`` on a fresh connection; everything the server answers until it
    closes the connection (or stops talking for ``timeout``)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-upload: the answer was written before the close
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_huge_header_is_refused_without_stalling_the_worker(live: LiveServer) -> None:
    """One unauthenticated request with a header of many MB held the event loop for
    seconds (quadratic parsing); the head is bounded and answered 431 in JSON now."""
    bomb = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 2**20) + b"\r\n\r\n"
    started = time.monotonic()
    answer = raw_exchange(live, bomb)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "headers_too_large"
    assert time.monotonic() - started < 5  # a floor against hanging, not a timing target
    assert live.call("GET", "/health").status_code == 200


def test_a_huge_trailer_is_refused_without_stalling_the_worker(live: LiveServer) -> None:
    """A chunked request whose trailer (header fields after the body) held 80 MiB froze
    the loop for 6 s, 200 MiB got the worker killed (API hunt, 2026-11-25): trailers are
    bounded like the head."""
    head = b"POST /commands/run-now HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    bomb = head + b"2\r\n{}\r\n0\r\nX-Big: " + b"a" * (8 * 2**20) + b"\r\n\r\n"
    started = time.monotonic()
    answer = raw_exchange(live, bomb)
    assert b" 431 " in answer, answer[:300]
    assert b'"headers_too_large"' in answer
    assert time.monotonic() - started < 5  # a floor against hanging, not a timing target
    assert live.call("GET", "/health").status_code == 200


def test_chunked_bodies_with_small_trailers_and_many_chunks_pass(live: LiveServer) -> None:
    payload = json.dumps({"tenant_id": "acme"}).encode()
    body = b"".join(f"{1:x}\r\n".encode() + bytes([c]) + b"\r\n" for c in payload)
    request = (b"POST /commands/run-now HTTP/1.1\r\nHost: x\r\nX-API-Token: "
               + live.admin_token.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + body + b"0\r\nX-Trailer: " + b"t" * 1000 + b"\r\n\r\n")
    # one chunk per byte above: framing five times the body is still a request
    answer = raw_exchange(live, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_heads_within_the_bound_and_big_bodies_pass(live: LiveServer) -> None:
    """Only the head is counted: a body far larger than the bound, sent in the same write
    as its headers, and a header just under the bound both go through."""
    big = {"id": "big-body-1", "from": "a@acme.test", "to": ["b@example.com"], "subject": "s",
           "body": "x" * (4 * MAX_HEAD_BYTES), "account_id": "smtp1",
           "deferred_ts": int(time.time()) + 3600}
    payload = json.dumps({"tenant_id": "acme", "messages": [big]})
    request = (f"POST /commands/add-messages HTTP/1.1\r\nHost: x\r\n"
               f"X-API-Token: {live.admin_token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n{payload}").encode()
    answer = raw_exchange(live, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"queued":1' in answer
    near = live.call("GET", "/health", headers={"X-Pad": "p" * (MAX_HEAD_BYTES - 2048)})
    assert near.status_code == 200


def test_keep_alive_requests_each_get_a_fresh_head_count(live: LiveServer) -> None:
    """Many requests on one connection add up to more than the bound; each is its own head."""
    one = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 8000 + b"\r\n\r\n"
    count = MAX_HEAD_BYTES // len(one) + 4
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(live, one * count + last)
    assert answer.count(b"HTTP/1.1 200 ") == count + 1
    assert b" 431 " not in answer


def test_trailing_slash_is_a_json_404_not_a_redirect(live: LiveServer) -> None:
    for method, path in (("GET", "/status/"), ("POST", "/commands/add-messages/"),
                         ("GET", "/tenant/")):
        answer = live.call(method, path, live.admin_token, headers={"Host": "evil.example"},
                           follow_redirects=False)
        assert answer.status_code == 404, (path, answer.status_code)
        assert answer.json()["ok"] is False and "location" not in answer.headers


def test_cursor_and_age_beyond_64_bits_are_400(live: LiveServer) -> None:
    for pk in (2**63, -1, 2**70):
        cursor = base64.urlsafe_b64encode(json.dumps({"pk": pk}).encode()).decode().rstrip("=")
        answer = live.call("GET", "/messages", live.admin_token,
                           params={"tenant_id": "acme", "cursor": cursor})
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), pk
    for how in ({"json": {"older_than_seconds": 2**70}},
                {"params": {"older_than_seconds": "9" * 25}},
                {"params": {"older_than_seconds": "９"}}):  # a full-width digit
        answer = live.call("POST", "/commands/cleanup-messages", live.admin_token, **how)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), how


def test_integer_query_parameters_are_plain_digits(live: LiveServer) -> None:
    for value in ("1_0", "+5", "３", " 7", "9" * 5000):
        answer = live.call("GET", "/messages", live.admin_token,
                           params={"tenant_id": "acme", "limit": value})
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_parameter"), value
    ok = live.call("GET", "/messages", live.admin_token, params={"tenant_id": "acme",
                                                                  "limit": "10"})
    assert ok.status_code == 200


def test_credential_headers_trimmed_and_never_ambiguous(live: LiveServer) -> None:
    # httpx refuses to send trailing spaces in a header value; some clients do send them
    spaced = raw_exchange(live, f"GET /status HTTP/1.1\r\nHost: x\r\nX-API-Token: "
                                f"{live.admin_token}  \r\nConnection: close\r\n\r\n".encode())
    assert spaced.startswith(b"HTTP/1.1 200 "), spaced[:300]
    def tenants_with(*tokens: str) -> bytes:
        lines = "".join(f"X-API-Token: {t}\r\n" for t in tokens)
        return raw_exchange(live, f"GET /tenants HTTP/1.1\r\nHost: x\r\n{lines}"
                                  "Connection: close\r\n\r\n".encode())

    for pair in ((live.admin_token, live.keys["acme"]), (live.keys["acme"], live.admin_token)):
        twice = tenants_with(*pair)
        assert twice.startswith(b"HTTP/1.1 400 ") and b"conflicting_credentials" in twice
    assert tenants_with(live.admin_token, live.admin_token).startswith(b"HTTP/1.1 200 ")


def test_a_suppressed_address_with_a_slash_can_be_removed(live: LiveServer) -> None:
    address = "a/b@x.test"  # "/" is legal in a local part, and messages accept it
    added = live.call("POST", "/suppressions", live.admin_token,
                      json={"tenant_id": "acme", "address": address})
    assert added.status_code in (200, 201), added.text
    removed = live.call("DELETE", "/suppressions/a%2Fb%40x.test", live.admin_token,
                        params={"tenant_id": "acme"})
    assert removed.status_code == 200, removed.text
    listed = live.call("GET", "/suppressions", live.admin_token, params={"tenant_id": "acme"})
    assert address not in json.dumps(listed.json())


def test_add_messages_reads_tenant_id_from_the_query(live: LiveServer) -> None:
    message = {"id": "query-tenant-1", "from": "a@acme.test", "to": ["b@example.com"],
               "subject": "s", "body": "b", "account_id": "smtp1",
               "deferred_ts": int(time.time()) + 3600}
    answer = live.call("POST", "/commands/add-messages", live.admin_token,
                       params={"tenant_id": "acme"}, json={"messages": [message]})
    assert answer.status_code == 200 and answer.json()["queued"] == 1, answer.text
    clash = live.call("POST", "/commands/add-messages", live.admin_token,
                      params={"tenant_id": "other"}, json={"tenant_id": "acme", "messages": []})
    assert (clash.status_code, clash.json()["code"]) == (400, "conflicting_parameters")
    foreign = live.call("POST", "/commands/add-messages", live.keys["acme"],
                        params={"tenant_id": "other"}, json={"messages": [message]})
    assert (foreign.status_code, foreign.json()["code"]) == (403, "tenant_mismatch")


def test_patching_an_account_with_another_tenants_id_is_403(live: LiveServer) -> None:
    answer = live.call("PATCH", "/account/smtp1", live.keys["acme"],
                       json={"tenant_id": "other", "host": "evil.test"})
    assert (answer.status_code, answer.json()["code"]) == (403, "tenant_mismatch")


def test_attachment_auth_shows_its_method_not_its_secret(live: LiveServer) -> None:
    def attachment(name: str, auth: dict[str, Any]) -> dict[str, Any]:
        return {"filename": name, "storage_path": f"https://files.example.com/{name}",
                "fetch_mode": "http_url", "auth": auth}

    message = {"id": "auth-shown-1", "from": "a@acme.test", "to": ["b@example.com"],
               "subject": "s", "body": "b", "account_id": "smtp1",
               "deferred_ts": int(time.time()) + 3600,
               "attachments": [attachment("a.pdf", {"method": "bearer", "token": "T0KEN"}),
                               attachment("b.pdf", {"method": "none"})]}
    answer = live.call("POST", "/commands/add-messages", live.admin_token,
                       json={"tenant_id": "acme", "messages": [message]})
    assert answer.status_code == 200 and answer.json()["queued"] == 1, answer.text
    shown = live.call("GET", "/messages/auth-shown-1", live.admin_token,
                      params={"tenant_id": "acme"})
    auths = [a["auth"] for a in shown.json()["message"]["payload"]["attachments"]]
    assert auths == [{"method": "bearer", "has_secret": True},
                     {"method": "none", "has_secret": False}]
    assert "T0KEN" not in shown.text


def test_range_errors_print_integers_in_full(live: LiveServer) -> None:
    answer = live.call("PATCH", "/instance", live.admin_token,
                       json={"max_request_bytes": 2**40})
    assert answer.status_code == 422
    assert "1073741824" in answer.text and "e+" not in answer.text


async def test_the_worker_answers_others_while_a_big_head_arrives(live: LiveServer) -> None:
    """A slow sender of a big head does not hold anybody else up: the bound closes it."""
    loop = asyncio.get_running_loop()
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEAD_BYTES)
    refused = loop.run_in_executor(None, raw_exchange, live, big)
    health = await loop.run_in_executor(None, live.call, "GET", "/health")
    assert health.status_code == 200
    assert (await refused).startswith(b"HTTP/1.1 431 ")


def test_a_refused_request_is_logged_with_its_request_id(live: LiveServer) -> None:
    """api.md §1.2: the id a client sends (or gets) can be found in the worker's log."""
    assert live.log_path is not None
    answer = live.call("GET", "/tenants", "not-a-token", headers={"X-Request-ID": "rid-4711-x"})
    assert answer.status_code == 401 and answer.headers["x-request-id"] == "rid-4711-x"
    ok = live.call("GET", "/status", live.admin_token, headers={"X-Request-ID": "rid-4712-y"})
    assert ok.status_code == 200
    lines = live.log_path.read_text(encoding="utf-8").splitlines()
    # the log holds the test client's own (httpcore) lines too: only the worker's count
    ours = [ln for ln in lines if " mail_proxy.api: " in ln]
    refused = [ln for ln in ours if "rid-4711-x" in ln]
    assert refused and refused[0].startswith("INFO ") and "-> 401" in refused[0]
    assert "GET /tenants" in refused[0]
    assert any(ln.startswith("DEBUG ") and "rid-4712-y" in ln for ln in ours)


def test_tampered_cursors_are_400_on_every_paged_route(live: LiveServer) -> None:
    """Cursors decoded with a plain json.loads: deep nesting (RecursionError), a lone
    surrogate and, on PostgreSQL, a NUL reached the database or the parser as a 500
    (API hunt, 2026-11-25)."""
    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    nested = "[" * 5000 + "]" * 5000
    for route, extra in (("/suppressions", "&tenant_id=acme"), ("/messages", "&tenant_id=acme"),
                         ("/command-log", "")):
        for text in (nested, '{"a": "\\u0000", "pk": 1, "id": 1}',
                     '{"a": "\\ud800", "pk": 1, "id": 1}'):
            r = live.call("GET", f"{route}?cursor={cursor(text)}{extra}", headers=admin(live))
            assert r.status_code == 400, (route, text[:20], r.text)
            assert r.json()["code"] == "invalid_parameter", r.text


def test_connections_that_never_finish_a_head_are_closed(live: LiveServer,
                                                         monkeypatch: Any) -> None:
    """Silent connections, and heads sent a byte now and then, were kept for ever: 20,000
    of them used up the worker's file descriptors (API hunt, 2026-11-25)."""
    from mail_proxy.api import http_protocol

    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT", 0.5)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", live.port), timeout=5) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nX-Pad: ")
        started = time.monotonic()
        for _ in range(20):  # a byte every 0.1 s keeps nothing alive
            try:
                slow.sendall(b"a")
            except OSError:
                break
            time.sleep(0.1)
        answer = slow.recv(65536)
        assert b" 408 " in answer and b'"request_timeout"' in answer, answer[:200]
        assert silent.recv(1) == b""  # closed without a word: it asked nothing
        assert time.monotonic() - started < 4
    # a keep-alive client whose next head comes at once is not affected
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as ok:
        for _ in range(2):
            ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the whole answer, head and JSON body
                chunk = ok.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            time.sleep(0.3)


def test_commands_refuse_fields_they_do_not_know(live: LiveServer) -> None:
    """A typo ("batch-code") was ignored, and the suspend it went with suspended the
    whole tenant instead of one batch (API hunt, 2026-11-25)."""
    r = live.call("POST", "/commands/suspend", headers=admin(live),
                  json={"tenant_id": "acme", "batch-code": "spring"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert [d["field"] for d in r.json()["detail"]] == ["batch-code"]
    tenant = live.call("GET", "/tenant/acme", headers=admin(live)).json()["tenant"]
    assert tenant["suspended_batches"] in ([], None), tenant
    for route, body in (("/commands/retry-messages", {"ids": ["x"], "id": "y"}),
                        ("/commands/run-now", {"tenant": "acme"}),
                        ("/commands/cleanup-messages", {"older_than": 5})):
        r = live.call("POST", route, headers=admin(live), json={"tenant_id": "acme", **body})
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (route, r.text)


def test_a_content_encoding_is_refused_not_ignored(live: LiveServer) -> None:
    import gzip

    body = json.dumps({"tenant_id": "acme"}).encode()
    for encoding, data in (("gzip", gzip.compress(body)), ("br", body)):
        r = live.call("POST", "/commands/run-now", content=data,
                      headers={**admin(live), "Content-Type": "application/json",
                               "Content-Encoding": encoding})
        assert r.status_code == 415, r.text
        assert r.json()["code"] == "unsupported_media_type" and encoding in r.json()["error"]
    r = live.call("POST", "/commands/run-now", content=body,
                  headers={**admin(live), "Content-Type": "application/json",
                           "Content-Encoding": "identity"})
    assert r.status_code == 200, r.text


def _counted(live: LiveServer, route: str, status: str) -> float:
    text = live.call("GET", "/metrics", live.admin_token).text
    line = next((x for x in text.splitlines() if x.startswith("gmp_http_requests_total{")
                 and f'route="{route}"' in x and f'status="{status}"' in x), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_a_client_hanging_up_mid_body_is_not_a_500(live: LiveServer) -> None:
    """Metrics hunt: any tenant could raise the 500 count at will (with an "internal error"
    traceback and a command-log row) by closing the connection while sending a body."""
    before = _counted(live, "/commands/add-messages", "500")
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"POST /commands/add-messages HTTP/1.1\r\nHost: x\r\n"
                     b"X-API-Token: " + live.keys["acme"].encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mes")
    for _ in range(50):
        if _counted(live, "/commands/add-messages", "499"):
            break
        time.sleep(0.05)
    assert _counted(live, "/commands/add-messages", "499") >= 1
    assert _counted(live, "/commands/add-messages", "500") == before


def test_a_refused_method_is_counted_under_its_route(live: LiveServer) -> None:
    """Metrics hunt: a 405 on a real route was counted as route="unmatched"."""
    before = _counted(live, "/commands/add-messages", "405")
    assert live.call("GET", "/commands/add-messages", live.keys["acme"]).status_code == 405
    assert _counted(live, "/commands/add-messages", "405") == before + 1
    assert live.call("GET", "/no/such/route", live.keys["acme"]).status_code == 404
    assert _counted(live, "unmatched", "404") >= 1
