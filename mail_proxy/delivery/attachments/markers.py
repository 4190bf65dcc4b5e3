"""The `{MD5:<hex>}` filename marker and filename cleaning (delivery.md §9.6)."""

from __future__ import annotations

import re

_MARKER = re.compile(r"\{MD5:([^{}]*)\}", re.IGNORECASE)
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_UNDERSCORES = re.compile(r"_{2,}")


def clean_filename(filename: str) -> str:
    """The name written in the email: markers removed, stray underscores tidied.

    `report_{MD5:9e10...}.pdf` -> `report.pdf`.
    """
    name = _MARKER.sub("", filename)
    name = _UNDERSCORES.sub("_", name)
    name = name.strip("_ ")
    return name.replace("_.", ".")


def marker_md5(filename: str) -> str | None:
    """The lower-cased hex of the first marker with exactly 32 digits, else None."""
    for match in _MARKER.finditer(filename):
        value = match.group(1)
        if _HEX32.match(value):
            return value.lower()
    return None


def is_md5_hex(value: str) -> bool:
    return bool(_HEX32.match(value))


def expected_md5(filename: str, content_md5: str | None) -> str | None:
    """`content_md5` when given, else the marker's value: the MD5 a fetch must match."""
    if content_md5:
        return content_md5.lower()
    return marker_md5(filename)
