"""MIME composition (messages.md §4) and the envelope (§4.3)."""

from __future__ import annotations

import base64
import email
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from mail_proxy.delivery.compose import AttachmentPart, build_message, envelope

MID = "<0123456789abcdef0123456789abcdef@mail-proxy.localdomain>"


def payload(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": "Billing <billing@acme.test>", "to": ["ann@example.com"], "cc": [], "bcc": [],
        "reply_to": [], "return_path": None, "subject": "Invoice 1001", "body": "Hello",
        "html": None, "content_type": "plain", "headers": {}, "attachments": []}
    base.update(kw)
    return base


def build(p: dict[str, Any], attachments: tuple[AttachmentPart, ...] = ()) -> bytes:
    return build_message(p, client_id="inv-1001", smtp_message_id=MID, date_ts=1767225600,
                         attachments=attachments)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if not line[:1].isspace()]


def test_plain_text_and_header_order() -> None:
    raw = build(payload(cc=["Carl <carl@example.com>"], reply_to=["help@acme.test"],
                        headers={"X-Campaign": "q1", "X-Count": 3}))
    assert header_names(raw) == [
        "Date", "From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "MIME-Version",
        "X-Mail-Proxy-ID", "X-Campaign", "X-Count", "Content-Type",
        "Content-Transfer-Encoding"]
    msg = parse(raw)
    assert msg["Date"] == "Thu, 01 Jan 2026 00:00:00 +0000"
    assert msg["Message-ID"] == MID
    assert msg["X-Mail-Proxy-ID"] == "inv-1001"
    assert msg["X-Count"] == "3"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Hello"


def test_wire_format_is_crlf_7bit_and_short_lines() -> None:
    raw = build(payload(body="é" * 3000 + "\n" + "x" * 2000, subject="ü" * 300,
                        headers={"X-Long": "word " * 400}))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert raw.isascii()
    assert parse(raw).get_content().startswith("é" * 3000)


def test_empty_lines_omit_optional_headers_and_bcc_never_written() -> None:
    raw = build(payload(bcc=["hidden@example.com"], return_path="bounce@acme.test"))
    names = header_names(raw)
    assert "Cc" not in names and "Reply-To" not in names
    assert b"hidden@example.com" not in raw
    assert b"Bcc" not in raw
    assert b"Return-Path" not in raw and b"bounce@acme.test" not in raw


def test_html_only_variants() -> None:
    assert parse(build(payload(body="<b>x</b>", content_type="html"))).get_content_type() \
        == "text/html"
    assert parse(build(payload(body="", html="<b>x</b>"))).get_content_type() == "text/html"


def test_text_and_html_make_alternative() -> None:
    msg = parse(build(payload(body="plain", html="<p>rich</p>")))
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_inline_and_regular_attachments_structure() -> None:
    logo = AttachmentPart("logo.png", b"\x89PNG....", "image/png", content_id="logo1")
    pdf = AttachmentPart("inv.pdf", b"%PDF-1.7", "application/pdf")
    csv = AttachmentPart("data.csv", b"a,b\n1,2\n", "text/csv")
    msg = parse(build(payload(body="plain", html="<img src='cid:logo1'>"), (logo, pdf, csv)))
    assert msg.get_content_type() == "multipart/mixed"
    body, *files = list(msg.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    text, related = list(body.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, inline = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert inline["Content-ID"] == "<logo1>"
    assert inline.get_content_disposition() == "inline"
    assert inline.get_content() == b"\x89PNG...."
    assert [f.get_filename() for f in files] == ["inv.pdf", "data.csv"]  # request order
    assert all(f.get_content_disposition() == "attachment" for f in files)
    assert all(f["Content-Transfer-Encoding"] == "base64" for f in files)
    assert files[1].get_content() in (b"a,b\n1,2\n", "a,b\n1,2\n")


@pytest.mark.parametrize("cid", ["c" * 75, "c" * 76 + "@x.y", "x" * 200,
                                 "=?utf-8?q?abc?=", "part1.06090408.01060107@acme.test"])
def test_a_content_id_goes_out_verbatim_on_one_line(cid: str) -> None:
    """Attachment hunt: one of 76 characters or more was written as RFC 2047 encoded words,
    which no client matches with the HTML's cid: reference (Python's parser decodes them,
    so only the raw bytes show it)."""
    logo = AttachmentPart("logo.png", b"\x89PNG", "image/png", content_id=cid)
    raw = build(payload(html=f"<img src='cid:{cid}'>"), (logo,))
    assert f"\r\nContent-ID: <{cid}>\r\n".encode() in raw


def test_inline_without_html_is_an_ordinary_attachment() -> None:
    logo = AttachmentPart("logo.png", b"\x89PNG", "image/png", content_id="logo1")
    msg = parse(build(payload(body="plain"), (logo,)))
    assert msg.get_content_type() == "multipart/mixed"
    part = list(msg.iter_parts())[1]
    assert part.get_content_disposition() == "attachment"


def test_non_ascii_subject_names_and_filenames_are_encoded() -> None:
    raw = build(payload(**{"from": '"Jörg, Müller" <j@acme.test>',
                           "to": ["Zoë <zoe@bücher.example>"], "subject": "Fattura n° 1 – ok"}),
                (AttachmentPart("rapporto é.pdf", b"x", "application/pdf"),))
    assert raw.isascii()
    assert b"=?utf-8?" in raw
    assert b"filename*=utf-8''rapporto%20%C3%A9.pdf" in raw
    msg = parse(raw)
    assert msg["Subject"] == "Fattura n° 1 – ok"
    assert msg["From"].addresses[0].display_name == "Jörg, Müller"
    assert msg["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"


@pytest.mark.parametrize("field", ["subject", "header", "client_id"])
def test_header_injection_is_impossible(field: str) -> None:
    evil = "hi\r\nBcc: victim@example.com\r\n\r\nbody"
    p = payload(subject=evil if field == "subject" else "s",
                headers={"X-Tag": evil} if field == "header" else {})
    raw = build_message(p, client_id=evil if field == "client_id" else "id",
                        smtp_message_id=MID, date_ts=0)
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert "Bcc" not in header_names(raw)
    assert msg.get_content().strip() == "Hello"


def test_invalid_header_name_is_refused() -> None:
    with pytest.raises(ValueError, match="header name"):
        build(payload(headers={"X-Bad\r\nBcc": "x"}))


def test_envelope_order_dedupe_and_idna() -> None:
    p = payload(to=["Ann <ann@example.com>", "bob@bücher.example"],
                cc=["ANN@example.com", "carl@example.com"], bcc=["Bob@Bücher.example", "d@x.test"])
    assert envelope(p) == ("billing@acme.test", [
        "ann@example.com", "bob@xn--bcher-kva.example", "carl@example.com", "d@x.test"])


def test_envelope_sender_precedence() -> None:
    assert envelope(payload(return_path="rp@acme.test"), bounce_return_path="b@acme.test")[0] \
        == "rp@acme.test"
    assert envelope(payload(), bounce_return_path="b@acme.test")[0] == "b@acme.test"
    assert envelope(payload())[0] == "billing@acme.test"


@pytest.mark.parametrize("brk", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_every_line_break_python_knows_is_folded(brk: str) -> None:
    """The email package refuses a header value holding any str.splitlines() boundary:
    such a subject, header or filename once failed every attempt as an internal error."""
    p = payload(subject=f"hello{brk}X-Injected: yes", headers={"X-Tag": f"v{brk}X-Other: 1"})
    part = AttachmentPart(filename=f"f{brk}x.txt", content=b"hi", mime_type="text/plain")
    msg = parse(build(p, (part,)))
    assert msg["Subject"] == "hello X-Injected: yes"
    assert msg["X-Tag"] == "v X-Other: 1"
    assert "X-Injected" not in header_names(build(p)) and "X-Other" not in header_names(build(p))
    assert [a.get_filename() for a in msg.iter_attachments()] == ["f x.txt"]


def _hiding(text: bytes = b"Invoice\r\nBcc: victim@example.com\r\n\r\n<h1>Pay here</h1>") -> str:
    return "=?utf-8?b?" + base64.b64encode(text).decode() + "?="


@pytest.mark.parametrize("with_attachment", [False, True])
def test_encoded_words_cannot_inject_headers_or_a_body(with_attachment: bool) -> None:
    """A message stored before enqueue refused these (or let in by any other way): every
    header value the email package would decode is written with the break folded."""
    nested = "=?utf-8?b?" + base64.b64encode(_hiding().encode()).decode() + "?="
    p = payload(**{"from": _hiding() + " <billing@acme.test>",
                   "to": [_hiding(b"Ann\r\nX-To-Evil: 1") + " <ann@example.com>"],
                   "reply_to": [_hiding(b"R\nX-Reply-Evil: 1") + " <r@acme.test>"],
                   "subject": "Re: " + nested, "headers": {"X-Tag": _hiding()}})
    parts = (AttachmentPart(_hiding(b"a\r\nX-File-Evil: 1") + ".txt", b"hi", "text/plain",
                            content_id=None),) if with_attachment else ()
    raw = build(p, parts)
    names = header_names(raw)
    assert not {"Bcc", "X-To-Evil", "X-Reply-Evil"} & set(names)
    assert b"\r\nX-File-Evil" not in raw and b"\nX-File-Evil" not in raw
    msg = parse(raw)
    assert msg["Subject"] == "Re: Invoice Bcc: victim@example.com <h1>Pay here</h1>"
    assert msg["From"].addresses[0].addr_spec == "billing@acme.test"
    assert msg["To"].addresses[0].addr_spec == "ann@example.com"
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hello"


def test_harmless_encoded_words_still_decode() -> None:
    raw = build(payload(subject="=?utf-8?q?caf=C3=A9?=", html="<p>é</p>"))
    assert parse(raw)["Subject"] == "café"


@pytest.mark.parametrize("subject", [
    "=?utf-8?q?a=0D=0AX-Evil: 1?=",            # white space inside the word
    "x=?utf-8?q?a=0D=0AX-Evil:_1?=y",          # glued to other text
    "=??q?a=0D=0AX-Evil:_1?=",                 # no charset
    "=?UTF-8?B?" + base64.b64encode(b"x\nX-Evil: 1").decode() + "?=",
])
def test_every_reading_of_an_encoded_word_is_defused(subject: str) -> None:
    raw = build(payload(subject=subject, html="<p>\u00e9</p>"))
    assert "X-Evil" not in header_names(raw)
    assert "X-Evil: 1" in str(parse(raw)["Subject"])


def _utf7_behind_a_bad_word(hidden: str) -> str:
    """A word only the email package's fallbacks decode (a base64 length no decoder takes,
    read as utf-7 text) glued behind an invalid word (verification hunt)."""
    text = "+" + base64.b64encode(hidden.encode("utf-16-be")).decode().rstrip("=") + "-"
    while sum(c.isalnum() or c in "+/" for c in text) % 4 != 1:
        text += "x"
    return "=?a?b?c?d?=.=?utf-7?b?" + text + "?="


@pytest.mark.parametrize("name, value", [
    # RFC 2231: no encoded word at all, decoded by the package's parameter parser
    ("Content-Disposition",
     "inline; filename*=utf-8''%0D%0ABcc%3A%20e5%40evil.test%0D%0A%0D%0APay%20EVIL"),
    ("Content-Disposition", _utf7_behind_a_bad_word("\r\nBcc: e7@evil.test\r\nX-Evil: 1")),
    ("Sender", _utf7_behind_a_bad_word("\r\nBcc: e7@evil.test").replace(".", "@")),
    ("Resent-To", _utf7_behind_a_bad_word("\r\nBcc: e7@evil.test").replace(".", "@")),
])
@pytest.mark.parametrize("with_attachment", [False, True])
def test_custom_headers_are_never_parsed_by_the_email_package(name: str, value: str,
                                                             with_attachment: bool) -> None:
    """Structured names (Content-Disposition, Sender, Resent-*) were parsed by the package's
    own parsers, which decode RFC 2231 and odd RFC 2047 forms and wrote the break raw."""
    parts = (AttachmentPart("a.txt", b"hi", "text/plain"),) if with_attachment else ()
    raw = build(payload(subject="Prix \u20ac", headers={name: value}), parts)
    assert not {"Bcc", "X-Evil"} & set(header_names(raw))
    msg = parse(raw)
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hello"


def test_written_headers_keep_their_text_fold_and_encode() -> None:
    long = " ".join(["word"] * 60)
    raw = build(payload(subject="Fattura n\u00b0 1", html="<p>x</p>",
                        headers={"X-Long": long, "X-Unbroken": "a" * 990,
                                 "X-Tag": "=?idna?q?abc?="}),
                (AttachmentPart("a.txt", b"hi", "text/plain"),))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg["Subject"] == "Fattura n\u00b0 1"
    assert msg["X-Long"] == long and msg["X-Unbroken"] == "a" * 990
    assert b"X-Tag: =?idna?q?abc?=" in head  # written as sent, not decoded by us


@pytest.mark.parametrize("with_attachment", [False, True])
def test_a_display_name_word_cannot_add_mailboxes(with_attachment: bool) -> None:
    """The package decoded the word itself and wrote a decoded "<" or "," unquoted: one
    more mailbox in From or To (fuzz hunt; the envelope never changed)."""
    sneaky = "=?utf-8?b?" + base64.b64encode(b"PayPal <security@paypal.com>,").decode() + "?="
    broken = "=?utf-8?b?w6n/?="  # valid UTF-8, then a byte that is not
    parts = (AttachmentPart("a.txt", b"hi", "text/plain"),) if with_attachment else ()
    msg = parse(build(payload(**{"from": f"{sneaky} <billing@acme.test>",
                                 "to": [f"{broken} <ann@example.com>"],
                                 "subject": "Prix \u20ac"}), parts))
    assert [a.addr_spec for a in msg["From"].addresses] == ["billing@acme.test"]
    assert msg["From"].addresses[0].display_name == "PayPal <security@paypal.com>,"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.com"]


def test_a_bad_stored_mime_type_or_a_repeated_header_cannot_break_the_message() -> None:
    """Stored before enqueue refused them: "text/html\\n" ended the part's headers early
    (the attachment became the body of a text/html part), and "Sender" next to "sender"
    made every attempt fail in the email package."""
    raw = build(payload(subject="\u00e9", headers={"Sender": "a@acme.test",
                                                   "sender": "b@acme.test"}),
                (AttachmentPart("report.pdf", b"%PDF", "text/html\n"),))
    msg = parse(raw)
    [part] = list(msg.iter_attachments())
    assert (part.get_content_type(), part.get_filename()) == ("application/octet-stream",
                                                              "report.pdf")
    assert header_names(raw).count("Sender") == 1 and msg["Sender"] == "a@acme.test"
