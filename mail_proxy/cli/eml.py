"""An RFC 5322 ``.eml`` file to an add-messages message object (cli.md §6.1).

The standard library's parser keeps the MIME structure; this module only picks what the
message object carries: the addresses and subject, the first text and HTML bodies, every
other leaf part as a base64 attachment (inline parts keep their ``Content-ID``), and the
headers worth copying. Validation is left to ``manager.enqueue`` like for the API.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import secrets
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

COPIED = ("In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post")
SKIPPED_X = "x-mail-proxy-id"


class EmlError(ValueError):
    """The file cannot become a message (missing From or Subject, not an e-mail)."""


def message_id_for(data: bytes, new_id: bool) -> str:
    """``eml-<sha256[:24]>`` so a file sent twice is one message; ``--new-id``: random."""
    if new_id:
        return f"eml-{secrets.token_hex(16)}"
    return f"eml-{hashlib.sha256(data).hexdigest()[:24]}"


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    out: list[str] = []
    for header in msg.get_all(name) or []:
        addresses = getattr(header, "addresses", None)
        if addresses is None:  # unparseable: let validation name the problem
            out.append(str(header))
            continue
        out += [str(a) for a in addresses if a.addr_spec and a.addr_spec != "<>"]
    return out


def _text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError):  # unknown charset: decode leniently
        raw = part.get_payload(decode=True) or b""
        return bytes(raw).decode("utf-8", errors="replace")


def _is_attachment(part: EmailMessage) -> bool:
    return part.get_content_disposition() == "attachment" or bool(part.get_filename())


def _attachment(part: EmailMessage, n: int) -> dict[str, Any]:
    content = part.get_payload(decode=True) or b""
    mime = part.get_content_type()
    filename = part.get_filename()
    if not filename:  # an inline part without a name: name it after its type
        filename = f"part-{n}{mimetypes.guess_extension(mime) or '.bin'}"
    filename = filename.replace("/", "_").replace("\\", "_")
    entry: dict[str, Any] = {"filename": filename,
                             "storage_path": base64.b64encode(bytes(content)).decode("ascii"),
                             "fetch_mode": "base64", "mime_type": mime}
    cid = part.get("Content-ID")
    if cid:
        entry["content_id"] = str(cid).strip().strip("<>").strip()
    return entry


def parse_eml(data: bytes, *, new_id: bool = False) -> dict[str, Any]:
    """The message object of one file; raises :class:`EmlError` when it cannot be one."""
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    if msg["From"] is None:
        raise EmlError("no From header")
    if msg["Subject"] is None:
        raise EmlError("no Subject header")
    out: dict[str, Any] = {"id": message_id_for(data, new_id), "from": str(msg["From"]),
                           "to": _addresses(msg, "To"), "subject": str(msg["Subject"])}
    for name, key in (("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "reply_to")):
        found = _addresses(msg, name)
        if found:
            out[key] = found
    body: str | None = None
    html: str | None = None
    attachments: list[dict[str, Any]] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if not _is_attachment(part) and kind == "text/plain" and body is None:
            body = _text(part)
        elif not _is_attachment(part) and kind == "text/html" and html is None:
            html = _text(part)
        elif _is_attachment(part) or part.get("Content-ID") or part is not msg:
            attachments.append(_attachment(part, len(attachments) + 1))
    out["body"] = body if body is not None else ""
    if html is not None:
        out["html"] = html
    if attachments:
        out["attachments"] = attachments
    if msg["Message-ID"]:
        out["message_id"] = str(msg["Message-ID"]).strip()
    headers = {name: str(msg[name]) for name in COPIED if msg[name] is not None}
    for name in dict.fromkeys(msg.keys()):
        if name.lower().startswith("x-") and name.lower() != SKIPPED_X:
            headers[name] = str(msg[name])
    if headers:
        out["headers"] = headers
    return out
