"""Fetch-mode inference and the base64 codec shared by enqueue and fetch (delivery.md §9.1-9.2)."""

from __future__ import annotations

import base64
import binascii
import re

BASE64 = "base64"
FILESYSTEM = "filesystem"
ENDPOINT = "endpoint"
HTTP_URL = "http_url"
MODES = (BASE64, FILESYSTEM, ENDPOINT, HTTP_URL)

# Not a fetch mode of its own: the enterprise storage form `MOUNT:relative/path` (§9.10).
MOUNT = "mount"

_WHITESPACE = re.compile(r"\s+")
_EXPLICIT = re.compile(r"^\[(?P<url>[^\]]+)\](?P<params>.*)$", re.DOTALL)


def infer_mode(storage_path: str) -> str:
    """The mode of §9.1 for a `storage_path` without `fetch_mode`; first match wins."""
    if storage_path.startswith("base64:"):
        return BASE64
    if storage_path[:8].lower().startswith(("http://", "https://")):  # schemes ignore case
        return HTTP_URL
    if storage_path.startswith("/"):
        return FILESYSTEM
    if storage_path.startswith("["):
        return ENDPOINT
    if ":" in storage_path:
        return MOUNT
    return ENDPOINT


def split_explicit(storage_path: str) -> tuple[str, str] | None:
    """`[https://host/path]params` -> (url, params); None for the plain endpoint form."""
    match = _EXPLICIT.match(storage_path)
    if match is None:
        return None
    return match.group("url"), match.group("params")


def canonical_base64(text: str) -> str:
    """Whitespace-free, padded, standard-alphabet form of `text`; ValueError when invalid.

    The URL-safe alphabet is recognised by `-` or `_`; mixing both alphabets is refused
    because no single decoding of such text is obviously the one the client meant.
    """
    if text.startswith("base64:"):
        text = text[len("base64:"):]
    text = _WHITESPACE.sub("", text)
    if "-" in text or "_" in text:
        if "+" in text or "/" in text:
            raise ValueError("mixes the standard and URL-safe base64 alphabets")
        text = text.translate(str.maketrans("-_", "+/"))
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise ValueError("has a length that no base64 text can have")
    return body + "=" * (-len(body) % 4)


def decoded_size_bound(canonical: str) -> int:
    """Upper bound of the decoded size, computed without decoding."""
    return len(canonical) // 4 * 3


def decode_base64(canonical: str) -> bytes:
    """Strict decoding of a canonical text; ValueError when a character is outside the alphabet."""
    try:
        return base64.b64decode(canonical, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"is not valid base64 ({exc})") from None
