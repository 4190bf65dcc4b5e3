"""Feed it garbage: every bad request gets a precise 4xx JSON error and the instance keeps
serving (issue 6, case 6). One running instance takes the whole barrage, then proves it is
still healthy by delivering a good message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemon import Daemon, RestartableSmtp, figures, message, wait_for

BIG = 26 * 1024 * 1024 + 1  # just over the default max_request_bytes (25 MiB)


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    yield b'{"tenant_id": "acme", "messages": [], "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def cases() -> list[tuple[str, dict[str, Any], int, str]]:
    """(name, request keyword arguments, expected status, expected code)."""
    post = "/commands/add-messages"
    ok = message("x")
    many = [f"r{i}@example.com" for i in range(10_000)]
    return [
        ("malformed JSON", {"url": post, "content": b'{"tenant_id": "acme", "messages": [',
                            "headers": {"content-type": "application/json"}},
         400, "invalid_json"),
        ("invalid UTF-8", {"url": post, "content": b'{"tenant_id": "acme\xff\xfe"}',
                           "headers": {"content-type": "application/json"}},
         400, "invalid_json"),
        ("NaN is not JSON", {"url": post, "content": b'{"tenant_id": "acme", "messages": '
                                                     b'[{"id": "n", "priority": NaN}]}',
                             "headers": {"content-type": "application/json"}},
         400, "invalid_json"),
        ("body not an object", {"url": post, "json": ["a", "b"]}, 400, "invalid_body"),
        ("messages not a list", {"url": post, "json": {"tenant_id": "acme", "messages": 7}},
         422, "validation_error"),
        ("tenant_id a number", {"url": post, "json": {"tenant_id": 5, "messages": [ok]}},
         422, "validation_error"),
        ("wrong field types", {"url": post, "json": {"tenant_id": "acme", "messages": [
            {**ok, "to": 42, "subject": ["x"], "priority": {"a": 1}}]}}, 400, "all_rejected"),
        ("huge body (declared)", {"url": post, "content": b"{" + b" " * BIG + b"}",
                                  "headers": {"content-type": "application/json"}},
         413, "body_too_large"),
        ("huge body (chunked)", {"url": post, "content": chunks(BIG),
                                 "headers": {"content-type": "application/json"}},
         413, "body_too_large"),
        ("10,000 recipients", {"url": post, "json": {"tenant_id": "acme",
                                                     "messages": [{**ok, "to": many}]}},
         400, "all_rejected"),
        ("CRLF in subject", {"url": post, "json": {"tenant_id": "acme", "messages": [
            {**ok, "subject": "Hi\r\nBcc: victim@example.com"}]}}, 400, "all_rejected"),
        ("CRLF in a header", {"url": post, "json": {"tenant_id": "acme", "messages": [
            {**ok, "headers": {"X-Note": "a\r\nBcc: victim@example.com"}}]}},
         400, "all_rejected"),
        ("unknown tenant", {"url": post, "json": {"tenant_id": "nobody", "messages": [ok]}},
         400, "all_rejected"),
        ("unknown account", {"url": post, "json": {"tenant_id": "acme", "messages": [
            {**ok, "account_id": "ghost"}]}}, 400, "all_rejected"),
        ("unknown message", {"url": "/messages/nope", "method": "GET",
                             "params": {"tenant_id": "acme"}}, 404, "message_not_found"),
        ("wrong content type", {"url": post, "content": b"tenant_id=acme",
                                "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type"),
    ]


REJECTION_CODE = {"wrong field types": "invalid_address", "10,000 recipients":
                  "too_many_recipients", "CRLF in subject": "invalid_field",
                  "CRLF in a header": "invalid_header", "unknown tenant": "tenant_not_found",
                  "unknown account": "account_not_found"}


@pytest.mark.timeout(90)
def test_bad_input_gets_4xx_and_the_instance_keeps_serving(daemon: Daemon,
                                                          smtp: RestartableSmtp) -> None:
    daemon.start()
    worker_pid = daemon.record()["worker_pid"]
    started = time.monotonic()
    with daemon.client(timeout=60) as client:
        wrong: list[str] = []
        for name, request, status, code in cases():
            method = request.pop("method", "POST")
            r = client.request(method, **request)
            body = r.json()  # never plain text
            got = (r.status_code, body.get("ok"), body.get("code"),
                   body["rejected"][0]["code"] if name in REJECTION_CODE else None)
            if got != (status, False, code, REJECTION_CODE.get(name)) or not body.get("error"):
                wrong.append(f"{name}: {r.status_code} {r.text[:200]}")
            assert client.get("/health").status_code == 200, f"unhealthy after {name}"
        assert not wrong, "\n".join(wrong)
        assert daemon.counts() == {}, "a refused request stored something"

        r = daemon.enqueue(client, [message("good")])
        assert r.status_code == 200, r.text
    wait_for(lambda: smtp.ids["m-good"] == 1, 20, "the good message delivered")
    assert daemon.record()["worker_pid"] == worker_pid and daemon.record()["restarts"] == 0
    assert "internal error" not in daemon.log_text()
    figures("bad input", requests=len(cases()), server_errors=0,
            seconds=round(time.monotonic() - started, 1))
    assert daemon.stop().returncode == 0


def test_malformed_eml_is_a_one_line_cli_error(daemon: Daemon, smtp: RestartableSmtp,
                                               tmp_path: Path) -> None:
    """cli.md §6.1: one `rejected FILE: reason` line per bad file, exit 1, nothing stored."""
    daemon.start()
    bad = tmp_path / "broken.eml"
    bad.write_bytes(b"\xff\xfeNot: an\r\n email at all\r\n\r\n\x00")
    r = daemon.cli(daemon.name, "acme", "send", str(bad))
    if "not implemented yet" in r.stderr:
        pytest.skip("`mail-proxy NAME TENANT send` is still a placeholder")
    assert r.returncode == 1, r
    assert r.stdout.startswith("rejected broken.eml: ") and r.stdout.count("\n") == 1, r
    assert "Traceback" not in r.stdout + r.stderr
    assert daemon.counts() == {}
    good = tmp_path / "good.eml"
    good.write_bytes(b"From: sender@acme.test\r\nTo: ann@example.com\r\n"
                     b"Subject: still serving\r\n\r\nHello\r\n")
    r = daemon.cli(daemon.name, "acme", "send", str(good))
    assert r.returncode == 0 and r.stdout.startswith("queued"), r
    wait_for(lambda: daemon.counts() == {"sent": 1} and smtp.total == 1, 20, "delivered")
    assert daemon.stop().returncode == 0


def test_http_client_never_sees_plain_text(daemon: Daemon) -> None:
    """Unknown routes and methods are JSON too (rule 3), on the real server."""
    daemon.start()
    with httpx.Client(base_url=daemon.url, timeout=10) as anon:
        r = anon.post("/commands/add-messages", json={})
        assert r.status_code == 401 and r.json()["code"] == "missing_token"
    with daemon.client() as client:
        assert client.get("/no/such/route").json()["code"] == "not_found"
        r = client.delete("/commands/add-messages")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert daemon.stop().returncode == 0
