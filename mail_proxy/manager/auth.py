"""Who is calling: the admin token or a tenant API key (api.md §2.1-2.2).

Tenant keys are looked up by ``sha256(key)``. Hits are cached for a couple of seconds so a
busy client does not cost one query per request; a key revoked by another process stops
working within :data:`CACHE_SECONDS` (the spec allows 5 s), and within this process at once
because every key-changing operation calls :func:`forget`. Misses are never cached: a key
created a moment ago must work on its first request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mail_proxy.errors import Forbidden, MailProxyError
from mail_proxy.manager.core import ADMIN, Core, Principal, now
from mail_proxy.security.tokens import hash_api_key, tokens_equal

CACHE_SECONDS = 2.0
_CACHE_MAX = 10_000
_ATTR = "_api_key_cache"


class Unauthorized(MailProxyError):
    """No usable token: send a valid ``X-API-Token`` or ``Authorization: Bearer``."""

    code = "invalid_token"
    status = 401


@dataclass(frozen=True)
class _Entry:
    tenant_id: str
    active: bool
    expires_at: int | None
    fetched: float


def _cache(core: Core) -> dict[str, _Entry]:
    # Kept on the Core so that two cores (tests, CLI + worker) never share entries.
    cache: dict[str, _Entry] = core.caches.setdefault(_ATTR, {})
    return cache


def forget(core: Core) -> None:
    """Drop every cached key of this process (a key, tenant or its state changed)."""
    _cache(core).clear()


async def _lookup(core: Core, digest: str) -> _Entry | None:
    cache = _cache(core)
    entry = cache.get(digest)
    clock = time.monotonic()
    if entry is not None and clock - entry.fetched < CACHE_SECONDS:
        return entry
    row: dict[str, Any] | None = await core.store.fetch_one("tenant_by_api_key",
                                                            api_key_hash=digest)
    if row is None:
        cache.pop(digest, None)
        return None
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    entry = _Entry(row["id"], bool(row["active"]), row["api_key_expires_at"], clock)
    cache[digest] = entry
    return entry


async def authenticate(core: Core, token: str, admin_token: str) -> Principal:
    """The principal of ``token``, or 401 ``missing_token``/``invalid_token``/``expired_token``,
    or 403 ``tenant_inactive``."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("an API token is required", code="missing_token")
    # Fail closed: an empty admin token never matches anything.
    if admin_token and tokens_equal(token, admin_token):
        return ADMIN
    entry = await _lookup(core, hash_api_key(token))
    if entry is None:
        raise Unauthorized("the API token is not valid", code="invalid_token")
    if entry.expires_at is not None and entry.expires_at <= now():
        raise Unauthorized(f"the API key of tenant '{entry.tenant_id}' has expired",
                           code="expired_token", detail={"tenant_id": entry.tenant_id})
    if not entry.active:
        raise Forbidden(f"tenant '{entry.tenant_id}' is inactive", code="tenant_inactive",
                        detail={"tenant_id": entry.tenant_id})
    return Principal("tenant", tenant_id=entry.tenant_id, name="tenant")
