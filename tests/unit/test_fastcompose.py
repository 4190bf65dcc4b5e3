"""The direct writer produces the same email as the general EmailMessage path."""

from __future__ import annotations

import email
from email import policy

import pytest

from mail_proxy.delivery.compose import build_general, build_message
from mail_proxy.delivery.fastcompose import build_simple

BASE = {"from": "Billing Dept <billing@acme.test>", "to": ["ann@example.com", "Bob <b@x.io>"],
        "cc": [], "bcc": ["hidden@example.com"], "reply_to": [], "return_path": None,
        "subject": "Invoice 1001", "body": "Hello,\nyour invoice.\n", "html": None,
        "content_type": "plain", "headers": {"X-Campaign": "q1", "X-Count": 3},
        "attachments": []}
CASES = [
    {},
    {"html": "<p>Hello</p>", "body": "Hello"},
    {"html": "<p>only html</p>", "body": ""},
    {"content_type": "html", "body": "<p>as body</p>"},
    {"body": "Grüße aus Köln — non-ASCII body"},
    {"cc": ["c@example.com"], "reply_to": ["Replies <r@acme.test>"]},
    {"from": '"Doe, John" <john@acme.test>'},
    {"body": "x" * 1200},
    {"to": ["ann@bücher.example"]},  # IDNA: written as xn--, same as the general path
]


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def texts(msg: email.message.EmailMessage) -> list[tuple[str, str]]:
    return [(part.get_content_type(), part.get_content().replace("\r\n", "\n").rstrip("\n"))
            for part in msg.walk() if part.get_content_maintype() == "text"]


@pytest.mark.parametrize("change", CASES)
def test_same_email_as_the_general_path(change: dict) -> None:
    payload = {**BASE, **change}
    kwargs = {"client_id": "inv-1001", "smtp_message_id": "<abc123@mail.acme.test>",
              "date_ts": 1767225600}
    fast = build_simple(payload, **kwargs)
    assert fast is not None
    general = build_general(payload, **kwargs)
    a, b = parse(fast), parse(general)
    for name in ("Date", "From", "To", "Cc", "Reply-To", "Subject", "Message-ID",
                 "MIME-Version", "X-Mail-Proxy-ID", "X-Campaign", "X-Count"):
        assert a[name] == b[name], name
    assert a.get_content_type() == b.get_content_type()
    assert texts(a) == texts(b)
    assert "hidden@example.com" not in fast.decode()
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))
    assert b"\n" not in fast.replace(b"\r\n", b"")


@pytest.mark.parametrize("change", [{"subject": "Grüße"}, {"from": "Zoë <z@acme.test>"},
                                    {"headers": {"X-Note": "café"}}])
def test_unusual_messages_take_the_general_path(change: dict) -> None:
    payload = {**BASE, **change}
    assert build_simple(payload, client_id="x", smtp_message_id="<a@b>", date_ts=0) is None
    raw = build_message(payload, client_id="x", smtp_message_id="<a@b>", date_ts=0)
    assert raw.isascii()


@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("part", ["body", "html"])
def test_a_nul_in_a_text_is_never_sent_raw(path: str, part: str) -> None:
    """RFC 2045 §2.7: 7bit data has no NUL; the text is base64-encoded and reads back whole."""
    payload = {**BASE, part: "before\x00after\n"}
    kwargs = {"client_id": "inv-1001", "smtp_message_id": "<abc123@mail.acme.test>",
              "date_ts": 1767225600}
    raw = (build_simple if path == "fast" else build_general)(payload, **kwargs)
    assert raw is not None and b"\x00" not in raw
    assert ("text/html" if part == "html" else "text/plain",
            "before\x00after") in texts(parse(raw))
