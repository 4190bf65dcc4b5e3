"""A direct writer for the common email: ASCII headers, text and/or HTML, no attachments.

The standard library's ``EmailMessage`` + generator costs about a millisecond per message,
which made composition the largest CPU cost of dispatch. Most messages need none of its
generality, so they are written here directly with the same structure and encodings;
anything unusual (attachments, non-ASCII or very long header values) returns ``None`` and
goes through :func:`mail_proxy.delivery.compose.build_message`'s general path.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from functools import lru_cache
from typing import Any

from mail_proxy.delivery.envelope import ascii_domain, split_address
from mail_proxy.encoded_words import hides_line_break

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_SAFE_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
_LINE_LIMIT = 998
_CRLF = "\r\n"


def _ascii_header(value: str) -> str | None:
    """A header value usable as is, or None (non-ASCII, CR/LF, an encoded word hiding
    one, or too long)."""
    if not _SAFE_VALUE.match(value) or hides_line_break(value):
        return None
    return value.strip()


@lru_cache(maxsize=4096)  # senders repeat from message to message
def _address(value: str) -> str | None:
    name, spec = split_address(value)
    local, at, domain = spec.rpartition("@")
    if at:
        spec = f"{local}@{ascii_domain(domain)}"
    if not _SAFE_VALUE.match(name) or not _SAFE_VALUE.match(spec) or hides_line_break(name):
        return None
    return formataddr((name, spec)) if name else spec


@lru_cache(maxsize=64)  # messages claimed together mostly share their second
def _date(ts: int) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _address_list(values: Any) -> str | None:
    out = []
    for value in values or ():
        formatted = _address(value)
        if formatted is None:
            return None
        out.append(formatted)
    return ", ".join(out)


def _text_part(text: str, subtype: str) -> str:
    """Headers and body of one text part, 7-bit on the wire."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if not normalised.endswith("\n"):
        normalised += "\n"
    lines = normalised.split("\n")[:-1]
    # RFC 2045 §2.7: 7bit data has no NUL (servers truncate or refuse it)
    if normalised.isascii() and "\x00" not in normalised \
            and all(len(line) <= _LINE_LIMIT for line in lines):
        body = _CRLF.join(lines) + _CRLF
        encoding = "7bit"
    else:
        raw = base64.encodebytes(normalised.encode("utf-8")).decode("ascii")
        body = raw.replace("\n", _CRLF)
        encoding = "base64"
    return (f'Content-Type: text/{subtype}; charset="utf-8"{_CRLF}'
            f"Content-Transfer-Encoding: {encoding}{_CRLF}{_CRLF}{body}")


def build_simple(payload: dict[str, Any], *, client_id: str, smtp_message_id: str,
                 date_ts: int) -> bytes | None:
    """Wire bytes of a simple message, or None when the general path is needed."""
    if payload.get("attachments"):
        return None
    headers = [("Date", _date(date_ts))]
    sender = _address(payload["from"])
    to = _address_list(payload.get("to"))
    cc = _address_list(payload.get("cc"))
    reply_to = _address_list(payload.get("reply_to"))
    subject = _ascii_header(str(payload.get("subject") or ""))
    message_id = _ascii_header(smtp_message_id)
    ident = _ascii_header(client_id)
    if (sender is None or to is None or cc is None or reply_to is None or subject is None
            or message_id is None or ident is None):
        return None
    headers.append(("From", sender))
    headers.append(("To", to))
    if cc:
        headers.append(("Cc", cc))
    if reply_to:
        headers.append(("Reply-To", reply_to))
    headers += [("Subject", subject), ("Message-ID", message_id), ("MIME-Version", "1.0"),
                ("X-Mail-Proxy-ID", ident)]
    for name, value in (payload.get("headers") or {}).items():
        if value is None:
            continue
        if not _HEADER_NAME.match(name) or isinstance(value, bool) \
                or not isinstance(value, str | int | float):
            return None
        text = _ascii_header(str(value))
        if text is None:
            return None
        headers.append((name, text))
    if any(len(name) + 2 + len(value) > _LINE_LIMIT for name, value in headers):
        return None
    body = payload.get("body") or ""
    html = payload.get("html")
    if html and body:
        boundary = "=_mp_" + secrets.token_hex(12)
        tree = (f'Content-Type: multipart/alternative; boundary="{boundary}"{_CRLF}{_CRLF}'
                f"--{boundary}{_CRLF}{_text_part(body, 'plain')}"
                f"--{boundary}{_CRLF}{_text_part(html, 'html')}"
                f"--{boundary}--{_CRLF}")
    elif html:
        tree = _text_part(html, "html")
    else:
        subtype = "html" if payload.get("content_type") == "html" else "plain"
        tree = _text_part(body, subtype)
    head = "".join(f"{name}: {value}{_CRLF}" for name, value in headers)
    return (head + tree).encode("ascii")
