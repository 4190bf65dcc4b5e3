"""The ``X-Mail-Proxy-Signature`` header (reports.md §3).

The MAC covers ``<t>.`` followed by the exact bytes of the request body, so the sender must
sign the bytes it sends and the receiver must verify the bytes it received, before parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Mail-Proxy-Signature"
TOLERANCE = 300


def mac(secret: str, timestamp: int | str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``<timestamp>.<body>`` keyed with the secret."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value ``t=<unix seconds>,v1=<hex>`` for this body."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={mac(secret, t, body)}"


def verify(secret: str, header: str | None, body: bytes, *, now: float | None = None,
           tolerance: int = TOLERANCE) -> bool:
    """True when one ``v1`` of the header matches and ``t`` is within the tolerance.

    Labels other than ``t`` and ``v1`` are ignored so that later schemes can be added.
    """
    if not header:
        return False
    stamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            stamp = value
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not stamp.isdigit() or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    expected = mac(secret, stamp, body)  # the digits as sent, leading zeros included
    # compare_digest on every candidate: the time taken must not reveal which one was close.
    matches = [hmac.compare_digest(expected, c) for c in candidates]
    return any(matches)
