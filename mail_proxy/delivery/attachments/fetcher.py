"""AttachmentFetcher: resolve every attachment of a message at send time (delivery.md §9)."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mail_proxy.delivery.attachments import filesystem, modes
from mail_proxy.delivery.attachments.cache import AttachmentCache, md5_of
from mail_proxy.delivery.attachments.http import Downloader, new_client, origin_of
from mail_proxy.delivery.attachments.limits import ItemMeter, MessageBudget, permanent, transient
from mail_proxy.delivery.attachments.markers import clean_filename, expected_md5
from mail_proxy.errors import DeliveryFailure, PermanentFailure, TransientFailure

log = logging.getLogger(__name__)

_INLINE_DECODE_LIMIT = 1024 * 1024  # decode larger base64 texts in a thread


@dataclass(frozen=True)
class TenantFetchContext:
    tenant_id: str
    base_url: str | None
    attachment_path: str
    client_auth: dict[str, Any] | None  # decrypted {"method": ..., "token"/"user"/"password"}
    created_at: int | None = None

    @property
    def cache_scope(self) -> str:
        """The tenant as the cache keys it: a tenant deleted and created again under the
        same id is another tenant, and must not find the deleted one's documents (attachment
        hunt: it got them byte for byte by naming their MD5)."""
        return self.tenant_id if self.created_at is None else f"{self.tenant_id}@{self.created_at}"


@dataclass(frozen=True)
class FetchedAttachment:
    filename: str          # cleaned: MD5 marker removed
    content: bytes
    mime_type: str
    content_id: str | None


class AttachmentFetcher:
    """Fetches with a per-worker concurrency bound, the size caps and the verified cache.

    Each attachment's bytes exist once: the object returned is the one the cache keeps.
    """

    def __init__(self, settings: Any, *, cache_dir: Path | None, version: str = "1.0.0",
                 on_fetch: Callable[[str, str], None] | None = None) -> None:
        self._settings = settings
        self._cache = AttachmentCache(settings, cache_dir)
        self._on_fetch = on_fetch
        self._semaphore = asyncio.Semaphore(int(settings.attachment_concurrency))
        self._client = new_client(float(settings.attachment_timeout))
        self._downloader = Downloader(self._client, f"mail-proxy/{version}",
                                      float(settings.attachment_timeout))
        if not mimetypes.inited:
            mimetypes.init()  # reads the system MIME tables once, at start rather than mid-send

    def update_settings(self, settings: Any) -> None:
        if int(settings.attachment_concurrency) != int(self._settings.attachment_concurrency):
            # Fetches in flight finish under the old bound; new ones use the new one.
            self._semaphore = asyncio.Semaphore(int(settings.attachment_concurrency))
        self._settings = settings
        self._downloader.timeout = float(settings.attachment_timeout)
        self._cache.update_settings(settings)

    async def close(self) -> None:
        await self._client.aclose()

    def cache_bytes(self) -> dict[str, int]:
        return self._cache.sizes()

    async def evict_expired(self) -> None:
        await self._cache.evict_expired()

    # -- one message ----------------------------------------------------------------------

    async def fetch_all(self, tenant: TenantFetchContext,
                        attachments: list[dict[str, Any]]) -> list[FetchedAttachment]:
        """All attachments in request order, or the failure that decides the message.

        A permanent failure stops the other fetches at once; after a transient one the
        others run on, so a permanent cause elsewhere is not hidden behind a retry.
        """
        settings = self._settings
        budget = MessageBudget(int(settings.max_attachment_bytes),
                               int(settings.max_message_attachment_bytes))
        tasks = [asyncio.create_task(self._fetch_one(tenant, item, budget))
                 for item in attachments]
        await _settle(tasks)
        failure = _failure(tasks)
        if failure is None:
            return [t.result() for t in tasks]
        # The failure's traceback will hold this frame: with the tasks (which hold the
        # failure) or the failure itself still named here, that is a reference cycle, and
        # the buffers of the download frames in it (up to the size cap, each) would wait
        # for a full garbage collection. Nothing here may name them once it is raised.
        del tasks
        try:
            raise failure
        finally:
            del failure

    async def _fetch_one(self, tenant: TenantFetchContext, item: dict[str, Any],
                         budget: MessageBudget) -> FetchedAttachment:
        name = clean_filename(item["filename"])
        mode = item["fetch_mode"]
        meter = budget.meter(name)
        try:
            content, outcome = await self._content(tenant, item, name, meter)
        except TransientFailure:
            self._count(mode, "transient_error")
            raise
        except PermanentFailure:
            self._count(mode, "permanent_error")
            raise
        self._count(mode, outcome)
        mime = (item.get("mime_type") or mimetypes.guess_type(name, strict=False)[0]
                or "application/octet-stream")
        return FetchedAttachment(name, content, mime, item.get("content_id"))

    async def _content(self, tenant: TenantFetchContext, item: dict[str, Any], name: str,
                       meter: ItemMeter) -> tuple[bytes, str]:
        mode = item["fetch_mode"]
        expected = expected_md5(item["filename"], item.get("content_md5"))
        if mode == modes.BASE64:
            text = item["storage_path"]
            if len(text) > _INLINE_DECODE_LIMIT:
                content = await asyncio.to_thread(modes.decode_base64, text)
            else:
                content = modes.decode_base64(text)
            meter.add(len(content))
            # a checksum the client sent is checked whatever the source (attachment hunt:
            # inline content skipped it silently)
            if expected is not None and (actual := await md5_of(content)) != expected:
                raise permanent(name, "attachment_md5_mismatch",
                                f"content MD5 {actual} does not match the expected {expected}")
            return content, "ok"
        if expected is not None:
            cached = await self._cache.get(tenant.cache_scope, expected)
            if cached is not None:
                meter.add(len(cached))
                return cached, "cache_hit"
        timeout = float(self._settings.attachment_timeout)
        async with self._semaphore:
            try:
                async with asyncio.timeout(timeout):
                    content = await self._fetch_source(tenant, item, name, meter)
            except TimeoutError:
                raise transient(name, f"fetch timed out after {timeout:g} s") from None
        actual = await md5_of(content)
        if expected is not None and actual != expected:
            raise permanent(name, "attachment_md5_mismatch",
                            f"content MD5 {actual} does not match the expected {expected}")
        await self._cache.put(tenant.cache_scope, actual, content)
        return content, "ok"

    async def _fetch_source(self, tenant: TenantFetchContext, item: dict[str, Any], name: str,
                            meter: ItemMeter) -> bytes:
        mode, path = item["fetch_mode"], item["storage_path"]
        allow_private = bool(self._settings.allow_private_urls)
        if mode == modes.FILESYSTEM:
            return await filesystem.read_file(path, self._settings.attachment_roots or [],
                                              name=name, meter=meter)
        if mode == modes.HTTP_URL:
            return await self._downloader.download(path, name=name, meter=meter,
                                                   allow_private=allow_private,
                                                   auth=item.get("auth"))
        if mode != modes.ENDPOINT:
            raise permanent(name, "attachment_error", f"unknown fetch mode '{mode}'")
        explicit = modes.split_explicit(path)
        if explicit is not None:
            url, params = explicit
            auth = item.get("auth")
            if auth is None and tenant.base_url and _same_origin(url, tenant.base_url):
                auth = tenant.client_auth
            return await self._downloader.download(url, name=name, meter=meter,
                                                   allow_private=allow_private, auth=auth,
                                                   post_path=params)
        if not tenant.base_url:
            # attachment_error, a code of delivery.md §9.9: endpoint_not_configured is the
            # enqueue rejection of the same cause (the URL was removed after enqueue)
            raise permanent(name, "attachment_error",
                            "endpoint attachments need the tenant's client_base_url, which is "
                            "not set")
        url = tenant.base_url.rstrip("/") + tenant.attachment_path
        auth = item.get("auth") if item.get("auth") is not None else tenant.client_auth
        return await self._downloader.download(url, name=name, meter=meter,
                                               allow_private=allow_private, auth=auth,
                                               post_path=path, exempt_origin=origin_of(url))

    def _count(self, mode: str, outcome: str) -> None:
        if self._on_fetch is None:
            return
        try:
            self._on_fetch(mode, outcome)
        except Exception:  # a metrics hook must never fail a delivery
            log.exception("attachment metrics hook failed")


async def _settle(tasks: list[asyncio.Task[FetchedAttachment]]) -> None:
    """Wait until every fetch is done, or one failure decides the message (then cancel)."""
    pending: set[asyncio.Task[FetchedAttachment]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            if any(_stops(t) for t in done):
                break
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _failure(tasks: list[asyncio.Task[FetchedAttachment]]) -> BaseException | None:
    """The failure that decides the message: the first that stops it, else the first."""
    finished = [t for t in tasks if t.done() and not t.cancelled()]
    errors = [exc for t in finished if (exc := t.exception()) is not None]
    if not errors:
        return None
    return next((e for e in errors if _stops_error(e)), errors[0])


def _stops(task: asyncio.Task[Any]) -> bool:
    return not task.cancelled() and task.exception() is not None and _stops_error(
        task.exception())


def _stops_error(exc: BaseException | None) -> bool:
    """Permanent failures and bugs end the message; transient ones let siblings finish."""
    return exc is not None and not (isinstance(exc, DeliveryFailure) and not exc.permanent)


def _same_origin(a: str, b: str) -> bool:
    return origin_of(a) is not None and origin_of(a) == origin_of(b)
