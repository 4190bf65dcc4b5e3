"""The HTTP/1.1 protocol the worker serves with: uvicorn's httptools one, with a bounded head.

httptools has no limit on the size of a request's head and gathers a header value by
repeated concatenation: one unauthenticated request with a 160 MB header held the event
loop (API, dispatch, reports) for 19 s, and a bigger one got the worker killed by its
supervisor. The head (request line and headers) is therefore counted as it arrives and a
request whose head passes MAX_HEAD_BYTES is answered 431 and its connection closed before
the parser sees more of it. h11, uvicorn's fallback, bounds the head itself.

Trailers (header fields after a chunked body) go through the same concatenation: an 80 MiB
trailer held the loop for 6 s and 200 MiB got the worker killed (API hunt, 2026-11-25).
What a request brings besides its head and its body bytes (chunk framing and trailers) is
therefore bounded too: MAX_HEAD_BYTES for trailers plus a little framing per chunk.
"""

from __future__ import annotations

import json
import random
from typing import Any

# nginx allows 4 x 8 KiB of header lines by default, Apache 8 KiB per line: 64 KiB in all
# is far above anything a client of this API sends (a token, a content type, a request id).
MAX_HEAD_BYTES = 64 * 1024
_ENDS = (b"\r\n\r\n", b"\n\n")
# A client has this long to send a request's head, from the moment its connection opened or
# its previous answer was sent: connections that send nothing, or a byte now and then, were
# kept for ever, and 20,000 of them used up the worker's file descriptors (API hunt).
HEAD_TIMEOUT = 20.0
# a chunk's size line and CRLFs: "ffffffff\r\n" ... "\r\n", with room for a short extension
_FRAMING_PER_CHUNK = 64


def _refusal(status: bytes, code: str, error: str) -> bytes:
    """A JSON error written before the request reached the application (api.md §1.3: no
    plain-text errors), with the X-Request-ID every answer carries (§1.2): a fresh one, since
    a request that could not be parsed has no id of its own to echo."""
    body = json.dumps({"ok": False, "code": code, "error": error}).encode()
    return (b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"x-request-id: " + f"{random.getrandbits(64):016x}".encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body)


def protocol_class() -> Any:
    """The class for ``uvicorn.Config(http=...)``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed: h11 limits the head on its own
        return "h11"

    class BoundedHeadProtocol(HttpToolsProtocol):
        _in_head = True
        _head_bytes = 0
        _tail = b""  # the last bytes seen, for a terminator split between two reads

        _head_timer: Any = None
        _raw_bytes = 0  # of the current request, head included
        _body_bytes = 0
        _chunks = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()  # the next request's head has the same time

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._in_head or self.transport.is_closing():
                return
            if self._head_bytes or self._tail:  # a head begun and never finished
                self.transport.write(_refusal(b"408 Request Timeout", "request_timeout",
                                              f"the request head took more than "
                                              f"{HEAD_TIMEOUT:g} s"))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._in_head and self._head_too_large(data):
                self._refuse("the request line and headers")
                return
            self._raw_bytes += len(data)
            super().data_received(data)
            extra = self._raw_bytes - self._body_bytes  # head, chunk framing, trailers
            if extra > 2 * MAX_HEAD_BYTES + _FRAMING_PER_CHUNK * self._chunks:
                self._refuse("the request's headers and trailers")

        def _refuse(self, what: str) -> None:
            if self.transport.is_closing():
                return
            self.transport.write(_refusal(
                b"431 Request Header Fields Too Large", "headers_too_large",
                f"{what} exceed {MAX_HEAD_BYTES} bytes"))
            self.transport.close()

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_chunk_header(self) -> None:  # httptools calls it when the class has it
            self._chunks += 1

        def send_400_response(self, msg: str) -> None:
            # uvicorn's own answer to a request its parser refuses is plain text
            self.transport.write(_refusal(b"400 Bad Request", "malformed_request",
                                          "the request is not valid HTTP/1.1"))
            self.transport.close()

        def _head_too_large(self, data: bytes) -> bool:
            seen = self._tail + data
            ends = [i + len(end) for end in _ENDS if (i := seen.find(end)) != -1]
            if ends:  # the head ends in this read: count only up to its end
                return self._head_bytes + min(ends) - len(self._tail) > MAX_HEAD_BYTES
            self._head_bytes += len(data)
            self._tail = seen[-3:]
            return self._head_bytes > MAX_HEAD_BYTES

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            # the next request on this connection starts with a fresh count
            self._in_head, self._head_bytes, self._tail = True, 0, b""
            self._raw_bytes = self._body_bytes = self._chunks = 0
            super().on_message_complete()

    return BoundedHeadProtocol
