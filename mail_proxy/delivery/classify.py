"""Turn SMTP replies and network errors into classified delivery failures (delivery.md §4).

Every failure the SMTP pool raises is built here, so the codes and the text forms of
messages.md §7 ("550 5.1.1 User unknown", "connection refused by host:port") live in one
place. The pool only says *at which stage* something went wrong.
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Any

import aiosmtplib

from mail_proxy.errors import (
    DeliveryFailure,
    PermanentFailure,
    ThrottleFailure,
    TransientFailure,
)

# Stages of one SMTP session, used to pick the row of the classification table.
GREETING = "greeting"
EHLO = "ehlo"
STARTTLS = "starttls"
AUTH = "auth"
MAIL = "mail"
RCPT = "rcpt"
DATA = "data"
NOOP = "noop"

# delivery.md §4's pattern, plus Postfix's own rate-limit replies (anvil: "450 4.7.1 Error:
# too much mail from 10.0.0.1", "... too many recipients from ..."), which it misses: a
# relay's rate limit then spent attempts and ended messages in error (Postfix interop hunt).
# "too many recipients" alone is a per-message limit (452 4.5.3), not a rate.
THROTTLE_TEXT = re.compile(r"rate.?limit|throttl|too many (messages|connections)|slow down"
                           r"|too much mail from|too many recipients from", re.IGNORECASE)
_AUTH_REFUSED = frozenset({530, 534, 535, 538})
_ENHANCED = re.compile(r"^\d\.\d{1,3}\.\d{1,3}\b")
# C0 controls but tab, DEL, C1 controls, and the bidirectional overrides and isolates
# (they reorder what a terminal shows, hiding or faking text).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                     r"\u2066-\u2069]")
# A reason quoted from a reply that is not SMTP stops here (a line may be 8 KB).
_REASON_CHARS = 200


def server_text(message: str) -> str:
    """The server's words on one line, as text any database can store and any terminal show.

    Replies arrive as bytes, which aiosmtplib and the channel decode as UTF-8 with surrogate
    escapes; a server that writes Latin-1 (older European MTAs do: "Empf\xe4nger") would
    leave lone surrogates in the text, and the outcome carrying it could not be written.
    Such a reply is read as Latin-1 instead. Line breaks join the lines of a multi-line
    reply with spaces; other control characters are shown as ``\\xNN``: PostgreSQL refuses
    NUL in text (the outcome was lost and the message sent again), and escape sequences
    would reach the terminal of whoever reads the failure (``messages show``).
    """
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        message = message.encode("utf-8", "surrogateescape").decode("latin-1")
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def reply_text(code: int, message: str) -> str:
    """``<code> <enhanced code> <server text>`` on one line, whatever the server sent."""
    return f"{code} {server_text(message)}".strip()


def is_throttle(code: int, message: str) -> bool:
    """A failing reply that means "slow down" rather than "this message is wrong"."""
    if code in (421, 451):
        return True
    return 400 <= code < 500 and bool(THROTTLE_TEXT.search(message))


def reply_failure(stage: str, code: int, message: str, *, user: str | None = None,
                  refused: list[dict[str, Any]] | None = None) -> DeliveryFailure:
    """Classify one failing reply received at ``stage``.

    Only a 4xx or 5xx refuses anything. Any other code here answers some other command (a
    spare reply shifted the pairing) or is not SMTP: the session state is unknown, so it is
    a transient protocol failure, and its code keeps the pool from reusing the connection.
    """
    text = reply_text(code, message)
    if not 400 <= code < 600:
        return TransientFailure(f"unexpected reply at {stage}: {text}",
                                code="connection_failed")
    if is_throttle(code, message):
        return ThrottleFailure(text, code="throttled", smtp_code=code, refused=refused)
    if stage == AUTH:
        if 400 <= code < 500:
            return TransientFailure(text, code="auth_temporary", smtp_code=code)
        enhanced = _ENHANCED.match(message.strip())
        prefix = f"{code} {enhanced.group(0)}" if enhanced else str(code)
        reason = f"{prefix} authentication failed for user '{user}'"
        if code not in _AUTH_REFUSED:
            reason = f"{reason} ({text})"
        return PermanentFailure(reason, code="auth_failed", smtp_code=code)
    if 400 <= code < 500:
        return TransientFailure(text, code="smtp_transient", smtp_code=code, refused=refused)
    return PermanentFailure(text, code="smtp_permanent", smtp_code=code, refused=refused)


def auth_unsupported(host: str, port: int, *, tls_mode: str, offers_auth: bool,
                     offers_starttls: bool) -> PermanentFailure:
    """Credentials configured, and no AUTH mechanism we can use on this connection."""
    text = (f"{host}:{port} offers no usable AUTH mechanism (CRAM-MD5, PLAIN, LOGIN) but "
            "credentials are configured")
    if not offers_auth and offers_starttls and tls_mode == "none":
        # Postfix's smtpd_tls_auth_only and most submission servers: AUTH only after TLS
        text = (f"{host}:{port} offers AUTH only after STARTTLS (it announces STARTTLS and no "
                "AUTH): set tls_mode starttls")
    return PermanentFailure(text, code="auth_unsupported")


def refused_entry(address: str, code: int, message: str) -> dict[str, Any]:
    """One item of ``refused_recipients`` (messages.md §7.1)."""
    return {"address": address, "smtp_code": code, "message": server_text(message)}


def all_refused_failure(refused: list[dict[str, Any]]) -> DeliveryFailure:
    """Every RCPT was refused: permanent only when every refusal was a 5xx."""
    if all(500 <= int(r["smtp_code"]) < 600 for r in refused):
        first = refused[0]
        return PermanentFailure(reply_text(first["smtp_code"], first["message"]),
                                code="all_recipients_refused",
                                smtp_code=first["smtp_code"], refused=refused)
    temporary = [r for r in refused if 400 <= int(r["smtp_code"]) < 500]
    throttling = [r for r in temporary if is_throttle(r["smtp_code"], r["message"])]
    # neither all 5xx nor any 4xx: one reply refuses nothing, a protocol error for reply_failure
    odd = [r for r in refused if not 400 <= int(r["smtp_code"]) < 600]
    pick = (throttling or temporary or odd)[0]
    return reply_failure(RCPT, pick["smtp_code"], pick["message"], refused=refused)


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _os_error(exc: BaseException) -> OSError | None:
    cur: BaseException | None = exc
    for _ in range(5):
        if cur is None:
            return None
        if isinstance(cur, OSError) and not isinstance(cur, aiosmtplib.SMTPException):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def tls_failure(exc: BaseException, host: str, port: int) -> DeliveryFailure | None:
    """A certificate problem is the operator's to fix; so is any other handshake failure."""
    err = _tls_error(exc)
    if err is None:
        return None
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = err.verify_message or err.reason or str(err)
        return PermanentFailure(f"TLS certificate verification failed for {host}: {reason}",
                                code="tls_certificate_error")
    reason = err.reason or str(err)
    return PermanentFailure(f"TLS handshake with {host}:{port} failed: {reason}",
                            code="tls_error")


def timeout_failure(host: str, port: int, stage: str, seconds: float) -> DeliveryFailure:
    what = "connecting to" if stage in (GREETING, EHLO, STARTTLS, AUTH) else "sending to"
    return TransientFailure(f"timeout after {seconds:g} s {what} {host}:{port} ({stage})",
                            code="timeout")


def connection_failure(exc: BaseException, host: str, port: int, stage: str) -> DeliveryFailure:
    """Refused, reset, closed, unreachable or unresolvable: all worth another try."""
    tls = tls_failure(exc, host, port)
    if tls is not None:
        return tls
    os_err = _os_error(exc)
    if isinstance(os_err, ConnectionRefusedError):
        text = f"connection refused by {host}:{port}"
    elif isinstance(os_err, socket.gaierror):
        text = f"cannot resolve {host}: {os_err.strerror or os_err}"
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        # not a lost connection: a reply that is not SMTP (malformed, endless, or answering
        # no command); the session was dropped, and the reason is worth keeping
        text = f"bad reply from {host}:{port} during {stage}: {_reason(exc)}"
    elif isinstance(exc, aiosmtplib.SMTPServerDisconnected) or stage not in (GREETING,):
        text = f"connection to {host}:{port} lost during {stage}"
    elif os_err is not None:
        text = f"cannot connect to {host}:{port}: {os_err.strerror or os_err}"
    else:
        text = f"cannot connect to {host}:{port}: {exc}"
    return TransientFailure(text, code="connection_failed")


def _reason(exc: aiosmtplib.SMTPResponseException) -> str:
    reason = server_text(exc.message)
    if exc.code >= 0:
        reason = f"{exc.code} {reason}"
    return reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS] + "..."
