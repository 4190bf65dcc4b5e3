"""The bounded Content-Encoding decoder of attachment downloads (QA hunt, delivery
finding 4): same content as a one-shot inflate, never more than STEP bytes per step."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from mail_proxy.content_encoding import (
    STEP,
    BodyDecodingError,
    decoder_for,
)

CONTENT = os.urandom(3 * STEP + 17) + bytes(5 * STEP)  # incompressible, then a long run


def decode(encoding: str | None, body: bytes, read: int) -> list[bytes]:
    decoder = decoder_for(encoding)
    steps = [piece for start in range(0, len(body), read)
             for piece in decoder.feed(body[start:start + read])]
    decoder.finish()
    return steps


def deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", gzip.compress(CONTENT)),
    ("x-gzip", gzip.compress(CONTENT)),
    ("GZIP", gzip.compress(CONTENT)),
    ("deflate", deflate(CONTENT, zlib.MAX_WBITS)),
    ("deflate", deflate(CONTENT, -zlib.MAX_WBITS)),
    ("identity", CONTENT),
    (None, CONTENT),
], ids=["gzip", "x-gzip", "GZIP", "deflate-zlib", "deflate-raw", "identity", "none"])
@pytest.mark.parametrize("read", [1, 1000, 1 << 16, 1 << 24])
def test_same_content_in_bounded_steps(encoding: str | None, body: bytes, read: int) -> None:
    steps = decode(encoding, body, read)
    assert b"".join(steps) == CONTENT
    if encoding not in (None, "identity"):
        assert max(map(len, steps)) <= STEP


def test_output_of_exactly_whole_steps() -> None:
    data = bytes(4 * STEP)
    assert b"".join(decode("gzip", gzip.compress(data), 1 << 20)) == data


def test_every_gzip_member_is_read() -> None:
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert b"".join(decode("gzip", body, 7)) == b"first second"


def test_a_bomb_comes_out_one_step_at_a_time() -> None:
    bomb = gzip.compress(bytes(64 * STEP))
    pieces = decoder_for("gzip").feed(bomb)  # one read holding the whole body
    assert len(next(pieces)) == STEP


@pytest.mark.parametrize(("encoding", "body", "error"), [
    ("gzip", b"not gzip at all", "undecodable gzip body"),
    ("deflate", b"\xff\xff not deflate", "undecodable deflate body"),
    ("gzip", gzip.compress(CONTENT)[:-30], "truncated gzip body"),
    ("deflate", deflate(CONTENT, zlib.MAX_WBITS)[:-30], "truncated deflate body"),
    ("deflate", b"x", "truncated deflate body"),
], ids=["not-gzip", "not-deflate", "short-gzip", "short-deflate", "one-byte"])
def test_broken_bodies_are_refused(encoding: str, body: bytes, error: str) -> None:
    with pytest.raises(BodyDecodingError, match=error):
        decode(encoding, body, 1000)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip"])
def test_encodings_we_did_not_ask_for_are_refused(encoding: str) -> None:
    with pytest.raises(BodyDecodingError, match="unsupported Content-Encoding"):
        decoder_for(encoding)
