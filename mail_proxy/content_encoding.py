"""Content-Encoding of downloaded bodies (attachments, report answers), inflated in bounded steps.

httpx inflates each network read whole before the caller sees it: a 64 KiB read of a gzip
bomb became about 64 MB before the size cap could stop it. Here the raw bytes are inflated
at most ``STEP`` bytes at a time, so the caller's meter sees every step and a download never
holds much more than its cap. Only the encodings we ask for (``ACCEPT``) are read; a body in
another one, or one that does not inflate, is refused rather than stored as garbage.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

ACCEPT = "gzip, deflate"
STEP = 64 * 1024  # most bytes one inflate step may produce
_GZIP = ("gzip", "x-gzip")
_DEFLATE = "deflate"


class BodyDecodingError(Exception):
    """The body cannot be decoded as its Content-Encoding says; the text says why."""


class Decoder:
    """Identity: the raw bytes are the content."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> None:
        """Called after the last byte: complain about a body that ended too early."""


class Inflater(Decoder):
    """gzip (one or more members) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = coding in _GZIP
        self._zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self._head = b""  # deflate: the first bytes, until they tell zlib from raw
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        if self._zlib is None:
            data = self._choose_deflate(data)
        while data:
            out = self._inflate(data)
            if out:
                yield out
            if self._zlib.eof:
                data = self._next_member()
                continue
            data = self._zlib.unconsumed_tail
            if not data and len(out) == STEP:
                # all input taken but the step was full: zlib may still hold output
                yield from self._drain()

    def _choose_deflate(self, data: bytes) -> bytes:
        """"deflate" is zlib-wrapped (RFC 9110), but some servers send it raw: a zlib
        header is two bytes whose method is 8 and whose value is a multiple of 31."""
        head = self._head + data
        if len(head) < 2:
            self._head = head
            return b""
        self._head = b""
        wrapped = head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return head

    def _inflate(self, data: bytes) -> bytes:
        try:
            return bytes(self._zlib.decompress(data, STEP))
        except zlib.error as exc:
            raise BodyDecodingError(f"undecodable {self.coding} body ({exc})") from None

    def _drain(self) -> Iterator[bytes]:
        while out := self._inflate(b""):
            yield out
            if len(out) < STEP:
                return

    def _next_member(self) -> bytes:
        """What follows the end of a stream: another gzip member, or nothing we read."""
        rest = bytes(self._zlib.unused_data)
        if not rest or not self._gzip:
            return b""  # bytes after the end of a deflate stream are ignored
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return rest

    def finish(self) -> None:
        if self._head or (self._fed and not self._zlib.eof):
            raise BodyDecodingError(f"truncated {self.coding} body")


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder for a Content-Encoding header; raises BodyDecodingError when unsupported."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return Decoder()
    if len(codings) == 1 and (codings[0] in _GZIP or codings[0] == _DEFLATE):
        return Inflater(codings[0])
    raise BodyDecodingError(f"unsupported Content-Encoding {content_encoding!r}")
