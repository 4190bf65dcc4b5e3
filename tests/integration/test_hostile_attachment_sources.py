"""Attachment sources that send broken or inflating bodies (delivery.md §9.4-9.9; QA hunt,
delivery findings 3 and 4), against a raw HTTP server on 127.0.0.1.

- A body announced as gzip that is not gzip is a classified fetch failure naming the
  attachment, never `internal_error`.
- A failed over-cap download frees its buffer at once: nothing may wait for the cyclic
  garbage collector (a worker reached 2 GB that way), and a gzip bomb is inflated in
  bounded steps, so one read cannot become tens of MB before the size check.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mail_proxy.delivery.attachments import AttachmentFetcher, TenantFetchContext
from mail_proxy.errors import DeliveryFailure, PermanentFailure, TransientFailure
from mail_proxy.settings import RuntimeSettings
from tests.support.raw_http import Canned, RawHttpServer

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
CONTENT = b"attachment content " * 300


def compress(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes as gzip, built piecewise (a few dozen KB for 64 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    return b"".join(packer.compress(zeros) for _ in range(size // MIB)) + packer.flush()


def gz(data: bytes) -> bytes:
    return compress(data, 16 + zlib.MAX_WBITS)


ROUTES = {
    "/badgzip": Canned(headers=[("Content-Encoding", "gzip")], body=b"not gzip at all"),
    "/gzip": Canned(headers=[("Content-Encoding", "gzip")], body=gz(CONTENT)),
    "/xgzip": Canned(headers=[("Content-Encoding", "x-gzip")], body=gz(CONTENT)),
    "/deflate": Canned(headers=[("Content-Encoding", "deflate")],
                       body=compress(CONTENT, zlib.MAX_WBITS)),
    "/rawdeflate": Canned(headers=[("Content-Encoding", "deflate")],
                          body=compress(CONTENT, -zlib.MAX_WBITS)),
    "/identity": Canned(headers=[("Content-Encoding", "identity")], body=CONTENT),
    "/truncated": Canned(headers=[("Content-Encoding", "gzip")], body=gz(CONTENT)[:-20]),
    "/brotli": Canned(headers=[("Content-Encoding", "br")], body=b"\x1b\x03\x00\xf8"),
    "/bomb": Canned(headers=[("Content-Encoding", "gzip")], body=gzip_bomb(64 * MIB)),
    "/big": Canned(body=bytes(3 * MIB), content_length=False),
}


@pytest.fixture
async def source() -> AsyncIterator[RawHttpServer]:
    # The endpoint mode posts to the tenant's URL; every path answers POST and GET alike.
    async with RawHttpServer(ROUTES) as srv:
        yield srv


@pytest.fixture
async def fetcher() -> AsyncIterator[AttachmentFetcher]:
    cfg = dataclasses.replace(RuntimeSettings(), allow_private_urls=True, cache_enabled=False,
                              max_attachment_bytes=2 * MIB, attachment_timeout=10)
    made = AttachmentFetcher(cfg, cache_dir=None)
    yield made
    await made.close()


def item(srv: RawHttpServer, path: str, mode: str) -> tuple[TenantFetchContext, dict[str, Any]]:
    if mode == "endpoint":
        ctx = TenantFetchContext("acme", srv.url(""), path, None)
        return ctx, {"filename": "file.bin", "storage_path": "doc-1", "fetch_mode": "endpoint"}
    ctx = TenantFetchContext("acme", None, "/unused", None)
    return ctx, {"filename": "file.bin", "storage_path": srv.url(path), "fetch_mode": "http_url"}


async def fetch(fetcher: AttachmentFetcher, srv: RawHttpServer, path: str,
                mode: str = "http_url") -> bytes:
    ctx, att = item(srv, path, mode)
    [got] = await fetcher.fetch_all(ctx, [att])
    return got.content


@pytest.mark.parametrize("mode", ["http_url", "endpoint"])
@pytest.mark.parametrize("path", ["/badgzip", "/truncated", "/brotli"])
async def test_undecodable_body_is_a_transient_fetch_failure(
        fetcher: AttachmentFetcher, source: RawHttpServer, path: str, mode: str) -> None:
    """No row of §9.9 fits; like a 5xx it is the source's fault and may be fixed there, so
    it is `attachment_unavailable` (transient), with a text naming the attachment."""
    with pytest.raises(TransientFailure) as info:
        await fetch(fetcher, source, path, mode)
    assert info.value.code == "attachment_unavailable"
    assert info.value.message.startswith("attachment 'file.bin': ")
    assert "127.0.0.1" in info.value.message


@pytest.mark.parametrize("path", ["/gzip", "/xgzip", "/deflate", "/rawdeflate", "/identity"])
async def test_encoded_bodies_are_decoded(fetcher: AttachmentFetcher, source: RawHttpServer,
                                          path: str) -> None:
    """Guards the bounded decoder that replaced httpx's (passes before the change too)."""
    assert await fetch(fetcher, source, path) == CONTENT
    assert await fetch(fetcher, source, path, "endpoint") == CONTENT


async def test_gzip_bomb_is_inflated_in_bounded_steps(fetcher: AttachmentFetcher,
                                                      source: RawHttpServer) -> None:
    """64 MiB of zeros in ~65 KB of gzip, cap 2 MiB: the download stops at the cap and its
    peak memory stays near the cap (httpx inflated a whole 64 KiB read at once: ~64 MB)."""
    tracemalloc.start()
    try:
        with pytest.raises(PermanentFailure) as info:
            await fetch(fetcher, source, "/bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == "attachment_too_large"
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("path", ["/big", "/bomb"])
async def test_failed_fetches_free_their_buffers_without_the_cycle_collector(
        fetcher: AttachmentFetcher, source: RawHttpServer, path: str) -> None:
    """With the cyclic GC off, each over-cap failure used to keep its 2+ MiB buffer alive
    (exception -> traceback -> frames -> buffer); now memory does not grow with failures."""
    codes: list[str] = []

    async def fail_once() -> None:
        try:
            await fetch(fetcher, source, path)
        except DeliveryFailure as exc:
            codes.append(exc.code)

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        await fail_once()  # warms up the client, the loop and the server
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            await fail_once()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert codes == ["attachment_too_large"] * 6
    assert grown < MIB, f"grew by {grown / MIB:.1f} MiB over 5 failed fetches"
