"""Build the outgoing email (messages.md §4.1-4.2) with the standard ``email`` package.

The body is 7-bit clean on the wire (quoted-printable or base64 where needed), so it can
be relayed by servers without 8BITMIME; lines end in CRLF and never exceed 998 octets.
Building a large message is CPU work: the dispatcher should call :func:`build_message`
through ``asyncio.to_thread`` (delivery.md §1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from io import BytesIO
from typing import Any

from mail_proxy.delivery.envelope import ascii_domain, split_address
from mail_proxy.delivery.envelope import envelope as envelope  # re-exported for callers
from mail_proxy.delivery.fastcompose import build_simple
from mail_proxy.encoded_words import decoded_text, defuse

# cte_type="7bit": never emit raw 8-bit bodies; RFC 2047 / 2231 for non-ASCII headers.
POLICY = email_policy.SMTP.clone(cte_type="7bit", max_line_length=78)
# Every character str.splitlines() breaks on: the email package refuses a header value with
# any of them (ValueError), which failed every attempt at such a message as an internal error.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+\s*")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII without space and ':'
_OPAQUE_TYPES = ("multipart", "message")
_LONGEST_WORD = 900
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


@dataclass(frozen=True)
class AttachmentPart:
    """Content of one attachment, already fetched and checked."""

    filename: str
    content: bytes
    mime_type: str
    content_id: str | None = None


def one_line(value: str) -> str:
    """Fold any line break into a space: a header value can never start a new header."""
    return _LINE_BREAKS.sub(" ", value).strip()


def header_text(value: str) -> str:
    """``one_line``, and encoded words that would decode to a line break written decoded:
    the email package decodes them and, before Python 3.11.10, writes the break raw."""
    return one_line(defuse(value))


class WrittenHeader(str):
    """A header the email package stores and writes as it is, never parsing it: its parsers
    decode RFC 2047 words and RFC 2231 parameters (``filename*=utf-8''%0D%0A...``) by header
    name and, before Python 3.11.10, wrote a decoded line break raw. Tenant text (the
    subject, custom headers) goes out this way: folded, RFC 2047-encoded when not ASCII."""

    name: str
    _folded: str

    def __new__(cls, name: str, text: str) -> WrittenHeader:
        self = super().__new__(cls, text)
        self.name = name
        # a word too long for a line (998 octets) is split into encoded words instead
        plain = text.isascii() and all(len(w) <= _LONGEST_WORD for w in text.split())
        self._folded = Header(text, "us-ascii" if plain else "utf-8", header_name=name
                              ).encode(linesep="\r\n", maxlinelen=78)
        return self

    def fold(self, *, policy: Any) -> str:  # the email package's header-object protocol
        return f"{self.name}: {self._folded}{policy.linesep}"


class VerbatimHeader(str):
    """A header written exactly as given, on one line: for a msg-id such as Content-ID,
    where RFC 2047 forbids encoded words and clients compare the literal text with the
    HTML's ``cid:`` reference. The email package folded one of 76 characters or more into
    encoded words, and the inline image matched nothing (attachment hunt). The value is
    validated printable ASCII of at most 200 characters, well within a line."""

    name: str

    def __new__(cls, name: str, text: str) -> VerbatimHeader:
        self = super().__new__(cls, text)
        self.name = name
        return self

    def fold(self, *, policy: Any) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _address(value: str) -> Address:
    # Headers must be ASCII without SMTPUTF8, and RFC 2047 may not encode a domain:
    # international domains are written in their IDNA form, as on the envelope.
    name, spec = split_address(one_line(value))
    local, at, domain = spec.rpartition("@")
    if at:
        spec = f"{local}@{ascii_domain(domain)}"
    # decoded here, once split off: the package would decode it itself and write a decoded
    # "<" or "," unquoted, a mailbox of its own
    return Address(display_name=one_line(decoded_text(name)), addr_spec=spec)


def _addresses(value: Any) -> list[Address]:
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [_address(v) for v in items if isinstance(v, str) and v.strip()]


def _text(text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    # the library writes ASCII text with a NUL as 7bit, which RFC 2045 §2.7 forbids
    part.set_content(text, subtype=subtype, charset="utf-8",
                     cte="base64" if "\x00" in text else None)
    return part


def _container(subtype: str, parts: Sequence[MIMEPart]) -> MIMEPart:
    box = MIMEPart(policy=POLICY)
    box["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        box.attach(part)
    return box


def _file(att: AttachmentPart, *, inline: bool) -> MIMEPart:
    maintype, _, subtype = att.mime_type.partition("/")
    if maintype.lower() in _OPAQUE_TYPES or not _MIME_TYPE.fullmatch(att.mime_type):
        # These types may not be base64-encoded (RFC 2046); ship them as opaque bytes.
        maintype, subtype = "application", "octet-stream"
    part = MIMEPart(policy=POLICY)
    part.set_content(att.content, maintype=maintype, subtype=subtype, cte="base64",
                     disposition="inline" if inline else "attachment",
                     filename=header_text(att.filename))
    if inline and att.content_id:
        cid = one_line(att.content_id).replace(" ", "").strip("<>")
        # a non-ASCII id can only be one stored before enqueue refused them: encoded words
        # then, as before, rather than raw bytes in a header
        part["Content-ID"] = (VerbatimHeader("Content-ID", f"<{cid}>") if cid.isascii()
                              else f"<{header_text(cid)}>")
    return part


def _body_tree(payload: dict[str, Any], attachments: Sequence[AttachmentPart]) -> MIMEPart:
    body = payload.get("body") or ""
    html = payload.get("html") or None
    if payload.get("content_type") in ("html", "text/html") and html is None:
        html, body = body, ""
    inline = [a for a in attachments if a.content_id] if html else []
    others = [a for a in attachments if a not in inline]

    html_part: MIMEPart | None = None
    if html is not None:
        html_part = _text(html, "html")
        if inline:
            html_part = _container("related",
                                   [html_part, *(_file(a, inline=True) for a in inline)])
    if html_part is not None and body:
        tree = _container("alternative", [_text(body, "plain"), html_part])
    elif html_part is not None:
        tree = html_part
    else:
        tree = _text(body, "plain")
    if others:
        tree = _container("mixed", [tree, *(_file(a, inline=False) for a in others)])
    return tree


def build_message(payload: dict[str, Any], *, client_id: str, smtp_message_id: str,
                  date_ts: int, attachments: Sequence[AttachmentPart] = ()) -> bytes:
    """Wire bytes of the email: headers in the order of messages.md §4.2, then the body.

    ``date_ts`` is ``max(created_at, deferred_ts)`` so every attempt carries the same Date;
    ``smtp_message_id`` is the stored Message-ID (identical across retries). Bcc is never
    written; ``return_path`` only goes into the envelope.
    """
    if not attachments:
        fast = build_simple(payload, client_id=client_id, smtp_message_id=smtp_message_id,
                            date_ts=date_ts)
        if fast is not None:
            return fast
    return build_general(payload, client_id=client_id, smtp_message_id=smtp_message_id,
                         date_ts=date_ts, attachments=attachments)


def build_general(payload: dict[str, Any], *, client_id: str, smtp_message_id: str,
                  date_ts: int, attachments: Sequence[AttachmentPart] = ()) -> bytes:
    """The general path through ``EmailMessage``: any content, attachments, RFC 2047."""
    msg = EmailMessage(policy=POLICY)
    msg["Date"] = format_datetime(datetime.fromtimestamp(date_ts, UTC))
    msg["From"] = _address(payload["from"])
    msg["To"] = _addresses(payload.get("to"))
    if cc := _addresses(payload.get("cc")):
        msg["Cc"] = cc
    if reply_to := _addresses(payload.get("reply_to")):
        msg["Reply-To"] = reply_to
    msg["Subject"] = WrittenHeader("Subject", header_text(str(payload.get("subject") or "")))
    msg["Message-ID"] = header_text(smtp_message_id)
    msg["MIME-Version"] = "1.0"
    msg["X-Mail-Proxy-ID"] = WrittenHeader("X-Mail-Proxy-ID", header_text(client_id))
    written: set[str] = set()
    for name, value in (payload.get("headers") or {}).items():
        if value is None or name.lower() in written:
            continue  # the first of "Sender" and "sender" (enqueue refuses such pairs now)
        written.add(name.lower())
        if not _HEADER_NAME.match(name):
            raise ValueError(f"invalid header name {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"invalid value for header {name!r}")
        msg[name] = WrittenHeader(name, header_text(str(value)))

    tree = _body_tree(payload, attachments)
    for name, value in tree.items():
        msg[name] = value
    msg.set_payload(tree.get_payload())

    out = BytesIO()
    BytesGenerator(out, policy=POLICY, mangle_from_=False).flatten(msg)
    return out.getvalue()
