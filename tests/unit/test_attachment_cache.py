"""Two-tier verified cache (delivery.md §9.7), on a real temp directory."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import pytest

from mail_proxy.delivery.attachments import cache as cache_module
from mail_proxy.delivery.attachments.cache import AttachmentCache
from mail_proxy.settings import RuntimeSettings

KIB = 1024


def settings(**changes: object) -> RuntimeSettings:
    return dataclasses.replace(RuntimeSettings(), **changes)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def test_small_items_live_in_memory_and_are_lru_bounded() -> None:
    cache = AttachmentCache(settings(cache_memory_mb=1, cache_disk_threshold_kb=1024), None)
    items = [bytes([i]) * (400 * KIB) for i in range(3)]
    for item in items:
        await cache.put("t", md5(item), item)
    # 3 x 400 KiB exceed 1 MiB: the least recently used one went.
    assert await cache.get("t", md5(items[0])) is None
    assert await cache.get("t", md5(items[2])) is items[2]
    assert cache.sizes() == {"memory": 800 * KIB, "disk": 0}


async def test_memory_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AttachmentCache(settings(cache_memory_ttl=10), None)
    await cache.put("t", md5(b"abc"), b"abc")
    now = time.monotonic()
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now + 11)
    await cache.evict_expired()
    assert cache.sizes()["memory"] == 0
    assert await cache.get("t", md5(b"abc")) is None


async def test_tenants_never_share_entries(tmp_path: Path) -> None:
    cache = AttachmentCache(settings(cache_disk_threshold_kb=1), tmp_path)
    small, large = b"s" * 10, b"L" * (2 * KIB)
    await cache.put("acme", md5(small), small)
    await cache.put("acme", md5(large), large)
    assert await cache.get("other", md5(small)) is None
    assert await cache.get("other", md5(large)) is None
    assert await cache.get("acme", md5(large)) == large


async def test_disk_tier_layout_and_corruption(tmp_path: Path) -> None:
    cache = AttachmentCache(settings(cache_disk_threshold_kb=1), tmp_path)
    data = os.urandom(4 * KIB)
    digest = md5(data)
    await cache.put("acme", digest, data)
    tenant = hashlib.sha256(b"acme").hexdigest()[:16]
    path = tmp_path / "attachments" / tenant / digest[:2] / digest
    assert path.read_bytes() == data
    assert list(path.parent.iterdir()) == [path]  # temp file renamed away
    assert cache.sizes()["disk"] == 4 * KIB
    path.write_bytes(b"tampered")
    assert await cache.get("acme", digest) is None
    assert not path.exists()
    assert cache.sizes()["disk"] == 0


async def test_disk_size_cap_evicts_oldest_and_ttl_by_mtime(tmp_path: Path) -> None:
    cache = AttachmentCache(settings(cache_disk_threshold_kb=1, cache_disk_mb=1,
                                     cache_disk_ttl=100), tmp_path)
    blobs = [os.urandom(300 * KIB) for _ in range(3)]
    for age, blob in zip((30, 20, 10), blobs, strict=True):
        await cache.put("t", md5(blob), blob)
        path = cache.path("t", md5(blob))
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    # The index saw the write-time mtimes; a fresh cache learns the back-dated ones.
    cache = AttachmentCache(cache.settings, tmp_path)
    extra = os.urandom(300 * KIB)
    await cache.put("t", md5(extra), extra)
    assert not cache.path("t", md5(blobs[0])).exists()  # oldest went to respect 1 MiB
    assert cache.path("t", md5(blobs[1])).exists()
    old = time.time() - 500
    os.utime(cache.path("t", md5(blobs[1])), (old, old))
    assert await cache.get("t", md5(blobs[1])) is None  # expired by mtime on read
    await cache.evict_expired()
    assert cache.sizes()["disk"] == 600 * KIB


async def test_housekeeping_eviction_removes_expired_files(tmp_path: Path) -> None:
    cache = AttachmentCache(settings(cache_disk_threshold_kb=1, cache_disk_ttl=60), tmp_path)
    blob = os.urandom(2 * KIB)
    await cache.put("t", md5(blob), blob)
    path = cache.path("t", md5(blob))
    cache = AttachmentCache(cache.settings, tmp_path)
    old = time.time() - 120
    os.utime(path, (old, old))
    await cache.evict_disk()
    assert not path.exists()
    assert cache.sizes()["disk"] == 0


async def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = AttachmentCache(settings(cache_enabled=False), tmp_path)
    await cache.put("t", md5(b"x"), b"x")
    assert await cache.get("t", md5(b"x")) is None
    assert not (tmp_path / "attachments").exists()
