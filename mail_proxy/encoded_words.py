"""RFC 2047 encoded words that hide a line break.

A value checked for CR and LF can still carry them encoded (``=?utf-8?b?...?=``). The
``email`` package decodes such words when it is handed a header value and, before Python
3.11.10 (CVE-2024-6923), writes the decoded line break raw: the text after it becomes
headers of its own (a ``Bcc:``) or, after an empty line, the body. Enqueue refuses these
values (:func:`hides_line_break`); composition defuses whatever reaches it anyway
(:func:`defuse`), such as messages stored before the check existed.
"""

from __future__ import annotations

import base64
import binascii
import re

# Lenient on purpose (any position, any charset name): the email package decodes words
# that RFC 2047 would not allow, inside quoted strings and next to other text included.
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# What must never come out of a header value: line breaks of any kind and other controls
# (tab excepted, it is folding white space).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_UNSAFE_RUN = re.compile(r"(?:[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]\s*)+")


def _decoded(match: re.Match[str]) -> str | None:
    charset, kind, text = match.group(1), match.group(2).lower(), match.group(3)
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if kind == "b":
            raw = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            raw = re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                         text.replace("_", " ").encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return None
    try:
        return raw.decode(charset, "replace")
    except LookupError:  # an unknown charset: the email package falls back to ASCII-ish
        return raw.decode("latin-1")


def hides_line_break(value: str) -> bool:
    """True when an encoded word of ``value`` decodes to a line break or control character."""
    if "=?" not in value:
        return False
    for match in _WORD.finditer(value):
        text = _decoded(match)
        if text is not None and (_UNSAFE.search(text) or hides_line_break(text)):
            return True
    return False


def defuse(value: str) -> str:
    """``value`` with every encoded word that hides a line break or control character
    replaced by its decoded text, those characters turned into single spaces. Harmless
    encoded words are left to the email package."""
    while "=?" in value:
        def plain(match: re.Match[str]) -> str:
            text = _decoded(match)
            if text is None or not (_UNSAFE.search(text) or hides_line_break(text)):
                return match.group(0)
            return _UNSAFE_RUN.sub(" ", text).strip()

        changed = _WORD.sub(plain, value)
        if changed == value:
            break
        value = changed  # the decoded text may itself hold encoded words (shorter each time)
    return value
