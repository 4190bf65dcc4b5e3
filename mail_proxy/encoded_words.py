"""RFC 2047 encoded words that hide a line break.

A value checked for CR and LF can still carry them encoded (``=?utf-8?b?...?=``). The
``email`` package decodes such words when it is handed a header value and, before Python
3.11.10 (CVE-2024-6923), writes the decoded line break raw: the text after it becomes
headers of its own (a ``Bcc:``) or, after an empty line, the body. Enqueue refuses these
values (:func:`hides_line_break`); composition defuses whatever reaches it anyway
(:func:`defuse`), such as messages stored before the check existed.

Two readings decide, and either one is enough: a lenient pattern of our own (any position,
any charset name, white space inside the encoded text) and the email package's own decoding
of the value as an unstructured header, the reading the composer meets.
"""

from __future__ import annotations

import base64
import binascii
import re
from email import policy

_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=", re.DOTALL)
# What must never come out of a header value: line breaks of any kind and other controls
# (tab excepted, it is folding white space).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_UNSAFE_RUN = re.compile(r"(?:[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]\s*)+")
_MAX_ROUNDS = 8  # each round removes at least one word; nesting deeper than this is hostile


def _decoded(match: re.Match[str]) -> str:
    charset, kind, text = match.group(1), match.group(2).lower(), match.group(3)
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    data = text.encode("ascii", "surrogateescape") if text.isascii() else \
        text.encode("utf-8", "surrogateescape")
    if kind == "b":
        # as the email package does: padded, then lenient, then (a length no base64 can
        # have) the text itself, which a charset such as utf-7 still decodes
        try:
            raw = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
        except (binascii.Error, ValueError):
            try:
                raw = base64.b64decode(data)
            except (binascii.Error, ValueError):
                raw = data
    else:
        raw = re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                     data.replace(b"_", b" "))
    try:
        return raw.decode(charset or "ascii", "replace")
    except Exception:  # unknown charset, or a codec without "replace" (idna): plain bytes
        return raw.decode("latin-1")


def _package_reading(value: str) -> str:
    """The text the email package makes of ``value`` as a header (its decoded form)."""
    try:
        return str(policy.SMTP.header_factory("x-check", value))
    except Exception:  # a value it cannot parse is not decoded by it either
        return value


def _words_hide(value: str) -> bool:
    for match in _WORD.finditer(value):
        text = _decoded(match)
        if _UNSAFE.search(text) or ("=?" in text and _words_hide(text)):
            return True
    return False


def hides_line_break(value: str) -> bool:
    """True when an encoded word of ``value`` decodes to a line break or control character."""
    if "=?" not in value:
        return False
    return _words_hide(value) or bool(_UNSAFE.search(_package_reading(value)))


def defuse(value: str) -> str:
    """``value`` itself when no encoded word in it hides a line break or control character;
    otherwise its decoded text (as the email package reads it, then every word left),
    those characters folded into single spaces."""
    if not hides_line_break(value):
        return value
    return decoded_text(_package_reading(value))


def decoded_text(value: str) -> str:
    """``value`` with every encoded word decoded (nested ones too), line breaks and controls
    folded to spaces, and no encoded word left: for a display name, which the email package
    would otherwise decode itself and write without the quotes a decoded ``<`` or ``,``
    needs (an extra mailbox in From or To)."""
    for _ in range(_MAX_ROUNDS):
        if "=?" not in value:
            return value
        plain = _UNSAFE_RUN.sub(" ", _WORD.sub(_decoded, value)).strip()
        if plain == value:
            break
        value = plain
    return value.replace("=?", "= ?")
