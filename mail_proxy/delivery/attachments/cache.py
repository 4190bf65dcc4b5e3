"""Two-tier attachment cache keyed by (tenant_id, MD5), verified on every hit (delivery.md §9.7).

The memory tier is an LRU of small items with a TTL; the disk tier holds the large ones as
files whose mtime is their age. All disk I/O and large hashing run in worker threads; the
disk index (sizes and mtimes, for the size cap and eviction) is only touched on the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
_INLINE_HASH_LIMIT = 1024 * 1024  # hash larger items in a thread


def md5_hex(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


async def md5_of(content: bytes) -> str:
    if len(content) <= _INLINE_HASH_LIMIT:
        return md5_hex(content)
    return await asyncio.to_thread(md5_hex, content)


def tenant_dir(tenant_id: str) -> str:
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:16]


class AttachmentCache:
    def __init__(self, settings: Any, cache_dir: Path | None) -> None:
        self.settings = settings
        self.root = None if cache_dir is None else Path(cache_dir) / "attachments"
        self._memory: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        self._memory_bytes = 0
        self._disk: dict[Path, tuple[int, float]] = {}
        self._disk_bytes = 0
        self._indexed = False
        self._index_lock = asyncio.Lock()

    # -- configuration and sizes ---------------------------------------------------------

    def update_settings(self, settings: Any) -> None:
        self.settings = settings
        self._trim_memory()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.cache_enabled)

    def sizes(self) -> dict[str, int]:
        return {"memory": self._memory_bytes, "disk": self._disk_bytes}

    def _threshold(self) -> int:
        return int(self.settings.cache_disk_threshold_kb) * 1024

    def path(self, tenant_id: str, md5: str) -> Path:
        assert self.root is not None
        return self.root / tenant_dir(tenant_id) / md5[:2] / md5

    # -- read ---------------------------------------------------------------------------

    async def get(self, tenant_id: str, md5: str) -> bytes | None:
        """Verified content, or None. A wrong MD5 evicts the entry, so the caller refetches."""
        if not self.enabled:
            return None
        key = (tenant_id, md5)
        entry = self._memory.get(key)
        if entry is not None:
            cached, stored = entry
            fresh = time.monotonic() - stored <= self.settings.cache_memory_ttl
            if fresh and await md5_of(cached) == md5:
                self._memory.move_to_end(key)
                return cached
            self._drop_memory(key)
        if self.root is None:
            return None
        await self._ensure_index()
        path = self.path(tenant_id, md5)
        content, gone = await asyncio.to_thread(_read_verified, path, md5,
                                                float(self.settings.cache_disk_ttl))
        if gone:
            self._forget_disk(path)
        if content is not None and len(content) < self._threshold():
            self._put_memory(key, content)
        return content

    # -- write --------------------------------------------------------------------------

    async def put(self, tenant_id: str, md5: str, content: bytes) -> None:
        """Store `content` under its computed MD5; the caller keeps the same bytes object."""
        if not self.enabled:
            return
        if len(content) < self._threshold():
            self._put_memory((tenant_id, md5), content)
            return
        cap = int(self.settings.cache_disk_mb) * MIB
        if self.root is None or len(content) > cap:
            return
        await self._ensure_index()
        path = self.path(tenant_id, md5)
        try:
            mtime = await asyncio.to_thread(_write_atomic, path, content)
        except OSError:
            return  # a full or read-only cache disk must not fail a delivery
        self._forget_disk(path)
        self._disk[path] = (len(content), mtime)
        self._disk_bytes += len(content)
        await self._trim_disk(cap)

    def _put_memory(self, key: tuple[str, str], content: bytes) -> None:
        if len(content) > int(self.settings.cache_memory_mb) * MIB:
            return
        self._drop_memory(key)
        self._memory[key] = (content, time.monotonic())
        self._memory_bytes += len(content)
        self._trim_memory()

    def _drop_memory(self, key: tuple[str, str]) -> None:
        entry = self._memory.pop(key, None)
        if entry is not None:
            self._memory_bytes -= len(entry[0])

    def _trim_memory(self) -> None:
        cap = int(self.settings.cache_memory_mb) * MIB
        while self._memory and self._memory_bytes > cap:
            _, (content, _) = self._memory.popitem(last=False)
            self._memory_bytes -= len(content)

    def _forget_disk(self, path: Path) -> None:
        entry = self._disk.pop(path, None)
        if entry is not None:
            self._disk_bytes -= entry[0]

    async def _trim_disk(self, cap: int) -> None:
        victims: list[Path] = []
        for path, _ in sorted(self._disk.items(), key=lambda item: item[1][1]):
            if self._disk_bytes <= cap:
                break
            victims.append(path)
            self._forget_disk(path)
        if victims:
            await asyncio.to_thread(_unlink_all, victims)

    # -- index and eviction ---------------------------------------------------------------

    async def _ensure_index(self) -> None:
        """Learn what earlier runs left on disk, once, so the size cap counts it."""
        if self._indexed or self.root is None:
            return
        async with self._index_lock:
            if self._indexed:
                return
            found = await asyncio.to_thread(_scan, self.root)
            for path, entry in found.items():
                if path not in self._disk:
                    self._disk[path] = entry
                    self._disk_bytes += entry[0]
            self._indexed = True

    async def evict_expired(self) -> None:
        """Drop expired memory entries, then expired disk files (unlinked in a thread).

        Runs on the loop, like every other touch of the two indexes: housekeeping once ran
        it in a thread, where it raced the sends over the memory index.
        """
        now = time.monotonic()
        ttl = self.settings.cache_memory_ttl
        for key in [k for k, (_, stored) in self._memory.items() if now - stored > ttl]:
            self._drop_memory(key)
        await self.evict_disk()

    async def evict_disk(self) -> None:
        if self.root is None:
            return
        await self._ensure_index()
        limit = time.time() - float(self.settings.cache_disk_ttl)
        victims = [p for p, (_, mtime) in self._disk.items() if mtime < limit]
        for path in victims:
            self._forget_disk(path)
        if victims:
            await asyncio.to_thread(_unlink_all, victims)
        await self._trim_disk(int(self.settings.cache_disk_mb) * MIB)


# -- thread-side helpers ---------------------------------------------------------------


def _read_verified(path: Path, md5: str, ttl: float) -> tuple[bytes | None, bool]:
    """(content, removed): expired or corrupt files are deleted and reported as removed."""
    try:
        info = path.stat()
        if time.time() - info.st_mtime > ttl:
            path.unlink(missing_ok=True)
            return None, True
        content = path.read_bytes()
    except OSError:
        return None, False
    if md5_hex(content) != md5:
        path.unlink(missing_ok=True)
        return None, True
    return content, False


def _write_atomic(path: Path, content: bytes) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temp.write_bytes(content)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path.stat().st_mtime


def _scan(root: Path) -> dict[Path, tuple[int, float]]:
    found: dict[Path, tuple[int, float]] = {}
    if not root.is_dir():
        return found
    for path in root.glob("*/*/*"):
        try:
            info = path.stat()
        except OSError:
            continue
        if path.name.endswith(".tmp"):
            # A live writer's file is seconds old; an hour-old one is a crash leftover.
            if time.time() - info.st_mtime > 3600:
                path.unlink(missing_ok=True)
            continue
        found[path] = (info.st_size, info.st_mtime)
    return found


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
