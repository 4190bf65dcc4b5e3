"""The enqueue's tenant cache while another request forgets entries in the middle of a
read (message-commands hunt: a KeyError, answered as 500, in one batch in four that named
two tenants under concurrency). Both backends."""

from __future__ import annotations

from typing import Any

from mail_proxy.manager.tenant_cache import TenantCache
from tests.support import factories as f


async def test_a_forget_during_the_read_does_not_lose_the_answer(core) -> None:
    await f.tenant(core)
    await f.tenant(core, "beta")
    cache = TenantCache()
    await cache.load(core, {"acme"})  # acme cached; beta will be read
    real = core.store.fetch

    async def fetch_while_another_request_forgets(query: str, **params: Any) -> Any:
        cache.forget({"acme"})  # what a concurrent request does after an admin write
        return await real(query, **params)

    core.store.fetch = fetch_while_another_request_forgets
    try:
        tenants, _ = await cache.load(core, {"acme", "beta", "nosuch"})
    finally:
        core.store.fetch = real
    assert set(tenants) == {"acme", "beta"}
