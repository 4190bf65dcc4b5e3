"""``send FILE.eml…`` with real .eml files, then the ``messages`` commands on what it stored."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
PDF = b"%PDF-1.4 tiny test file\n"


def rich_eml(path: Path, n: int = 1) -> Path:
    """multipart/mixed > (multipart/alternative > text, related(html, inline png)), pdf."""
    msg = EmailMessage()
    msg["From"] = "Billing <billing@acme.test>"
    msg["To"] = "Ann <ann@example.com>, bob@example.com"
    msg["Cc"] = "carol@example.com"
    msg["Subject"] = f"Invoice {n}"
    msg["Message-ID"] = f"<inv-{n}@acme.test>"
    msg["In-Reply-To"] = "<order-7@acme.test>"
    msg["X-Campaign"] = "q1"
    msg["X-Mail-Proxy-ID"] = "must-not-be-copied"
    msg.set_content(f"Plain text {n}\n")
    msg.add_alternative('<p>HTML <img src="cid:logo@acme.test"></p>\n', subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(PNG, "image", "png", cid="<logo@acme.test>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    path.write_bytes(msg.as_bytes())
    return path


def test_send_keeps_the_mime_structure(cli: Any, tenant: str, tmp_path: Path) -> None:
    r = cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
            "--tls-mode", "none", "--no-test")
    assert r.code == 0
    eml = rich_eml(tmp_path / "invoice.eml")
    expected_id = "eml-" + hashlib.sha256(eml.read_bytes()).hexdigest()[:24]
    r = cli("main", "acme", "send", str(eml), "--batch", "b1", "--priority", "high")
    assert (r.code, r.out, r.err) == (0, f"queued  invoice.eml  {expected_id}\n", "")

    r = cli("main", "acme", "messages", "show", expected_id, "--json")
    message = json.loads(r.out)["message"]
    payload = message["payload"]
    assert (message["batch_code"], message["priority"]) == ("b1", 1)
    assert payload["from"] == "Billing <billing@acme.test>"
    assert payload["to"] == ["Ann <ann@example.com>", "bob@example.com"]
    assert payload["cc"] == ["carol@example.com"]
    assert payload["body"] == "Plain text 1\n"
    assert payload["html"].startswith("<p>HTML")
    assert payload["headers"] == {"In-Reply-To": "<order-7@acme.test>", "X-Campaign": "q1"}
    atts = {a["filename"]: a for a in payload["attachments"]}
    assert set(atts) == {"part-1.png", "invoice.pdf"}
    assert atts["part-1.png"]["content_id"] == "logo@acme.test"
    assert base64.b64decode(atts["invoice.pdf"]["storage_path"]) == PDF
    assert atts["invoice.pdf"]["mime_type"] == "application/pdf"

    # the same file again is the same message id: idempotent, never a second message
    r = cli("main", "acme", "send", str(eml), "--json")
    assert json.loads(r.out)["queued"] in (0, 1)
    r = cli("main", "acme", "messages", "list", "--json")
    assert [m["id"] for m in json.loads(r.out)["messages"]] == [expected_id]
    r = cli("main", "acme", "send", str(eml), "--new-id", "--to", "zed@example.com")
    assert r.code == 0 and r.out.split()[2] != expected_id


def test_send_many_files_json_and_rejections(cli: Any, tenant: str, tmp_path: Path) -> None:
    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--no-test")
    files = [str(rich_eml(tmp_path / f"m{i}.eml", i)) for i in range(6)]
    broken = tmp_path / "broken.eml"
    broken.write_bytes(b"To: a@example.com\r\nSubject: no sender\r\n\r\nhello\r\n")
    r = cli("main", "acme", "send", *files[:3], str(broken), *files[3:], "--json")
    assert r.code == 1
    doc = json.loads(r.out)
    assert (doc["ok"], doc["queued"]) == (True, 6)
    assert doc["rejected"] == [{"index": 3, "id": None, "code": "invalid_eml",
                                "reason": "no From header"}]
    r = cli("main", "acme", "send", str(broken), "--json")  # nothing queued: REST's 400 form
    assert r.code == 1
    assert json.loads(r.out) == {"ok": False, "error": "no message was accepted",
                                 "code": "all_rejected", "queued": 0,
                                 "rejected": [{"index": 0, "id": None, "code": "invalid_eml",
                                               "reason": "no From header"}]}
    r = cli("main", "acme", "send", *files, "--new-id")  # > 5 files: a bar, then a summary
    assert (r.code, r.out) == (0, "6 queued, 0 rejected\n")
    r = cli("main", "acme", "send", str(broken), files[0], "--account", "nope")
    assert r.code == 1
    lines = r.out.splitlines()
    assert lines[0] == "rejected broken.eml: no From header"
    assert lines[1].startswith("rejected m0.eml: ") and "nope" in lines[1]


def test_an_interrupted_send_says_how_many_were_queued(cli: Any, tenant: str, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    from mail_proxy.manager import enqueue

    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--no-test")
    assert cli("main", "config", "set", "max_batch_messages", "2").code == 0
    files = [str(rich_eml(tmp_path / f"m{i}.eml", i)) for i in range(5)]
    real = enqueue.add_messages
    calls = []

    async def interrupted_at_the_second_chunk(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return await real(*args, **kwargs)

    monkeypatch.setattr(enqueue, "add_messages", interrupted_at_the_second_chunk)
    r = cli("main", "acme", "send", *files)
    assert r.code == 130
    assert "interrupted: 2 of 5 messages were queued before the interrupt" in r.err
    assert "Traceback" not in r.text


def test_messages_list_csv_delete_retry(cli: Any, tenant: str, tmp_path: Path) -> None:
    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--no-test")
    ids = []
    for i in range(2):
        r = cli("main", "acme", "send", str(rich_eml(tmp_path / f"x{i}.eml", i)))
        ids.append(r.out.split()[2])
    r = cli("main", "acme", "messages", "list", "--csv")
    rows = list(csv.reader(io.StringIO(r.out)))
    assert rows[0] == ["ID", "STATUS", "PRIO", "ACCOUNT", "CREATED", "SENT", "ATTEMPTS", "TO",
                       "SUBJECT", "LAST ERROR"]
    assert [row[0] for row in rows[1:]] == list(reversed(ids))  # newest first
    assert rows[1][1:4] == ["queued", "2", "main"] and rows[1][4].isdigit()
    page = cli("main", "acme", "messages", "list", "--csv", "--limit", "1")
    assert len(list(csv.reader(io.StringIO(page.out)))) == 2  # stdout stays pure CSV
    assert "more messages: add --cursor " in page.err  # message-commands hunt: it said nothing
    first = cli("main", "acme", "messages", "list", "--limit", "1")
    assert first.out.count("\n") == 2 and "--cursor" in first.err  # header + one row
    cursor = first.err.rsplit("--cursor ", 1)[1].strip()
    rest = json.loads(cli("main", "acme", "messages", "list", "--limit", "1", "--cursor",
                          cursor, "--json").out)
    assert [m["id"] for m in rest["messages"]] == [ids[0]] and rest["next_cursor"] is None
    r = cli("main", "acme", "messages", "list", "--status", "bogus")
    assert r.code == 2 and "--status: 'bogus' is not one of" in r.err
    r = cli("main", "acme", "messages", "retry", ids[0], "ghost")
    assert r.out.splitlines() == ["retried: 0", "not found: ghost",
                                  f"not retryable: {ids[0]} (message is already queued)"]
    assert (r.code, r.err) == (1, "error: some messages were not retried (listed above)\n")
    r = cli("main", "acme", "messages", "delete", ids[0], "ghost", "--yes", "--json")
    assert json.loads(r.out) == {"ok": True, "removed": 1, "not_found": ["ghost"],
                                 "in_flight": []}
    assert r.code == 1  # a script can tell that "ghost" was not there
    r = cli("main", "acme", "messages", "show", ids[1], "--history")
    assert r.code == 0 and "queued" in r.out
    # --json is the API's object, events included, with or without --history
    shown = json.loads(cli("main", "acme", "messages", "show", ids[1], "--json").out)
    with_history = json.loads(cli("main", "acme", "messages", "show", ids[1], "--history",
                                  "--json").out)
    assert "events" in shown["message"] and shown == with_history


@pytest.mark.parametrize("header", [b"From: a@acme.test\r\n", b"Subject: s\r\n"])
def test_eml_requires_from_and_subject(header: bytes) -> None:
    from mail_proxy.cli.eml import EmlError, parse_eml

    with pytest.raises(EmlError):
        parse_eml(header + b"To: b@example.com\r\n\r\nbody\r\n")


def test_send_refuses_what_is_not_a_regular_eml_of_sane_size(cli: Any, tenant: str,
                                                             tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    """/dev/zero was read for ever (Ctrl-C could not stop it) and an 85 MB file took 770 MB of
    memory before its message was refused (CLI hunt of 2026-11-25)."""
    from mail_proxy.cli import send

    monkeypatch.setattr(send, "EML_MAX_BYTES", 1000)
    big = tmp_path / "big.eml"
    big.write_bytes(b"From: a@acme.test\r\nSubject: s\r\n\r\n" + b"x" * 2000)
    r = cli("main", "acme", "send", "/dev/zero", str(big), "--json")
    assert r.code == 1
    reasons = [e["reason"] for e in json.loads(r.out)["rejected"]]
    assert reasons[0] == "not a regular file"
    assert reasons[1].startswith("larger than 0 MiB")


def test_delete_hints_say_what_force_does(cli: Any, tenant: str, tmp_path: Path) -> None:
    """The account's hint says where sending messages end; the tenant's that its messages
    go with it (it said they were cancelled, as an account's are)."""
    r = cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
            "--tls-mode", "none", "--no-test")
    assert r.code == 0
    assert cli("main", "acme", "send", str(rich_eml(tmp_path / "m.eml"))).code == 0
    r = cli("main", "acme", "accounts", "delete", "main", "--yes")
    assert r.code == 1 and "(1 queued)" in r.err
    assert "queued and deferred messages are cancelled" in r.err
    assert "account_not_found" in r.err
    r = cli("main", "tenants", "delete", "acme", "--yes")
    assert r.code == 1 and "delete the tenant with all its messages" in r.err
    r = cli("main", "tenants", "delete", "acme", "--yes", "--force")
    assert r.code == 0, r.err
