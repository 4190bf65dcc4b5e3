"""A limit set on an account (or its tenant) counts the sends of the last day, including
those made while nothing was limited and so no send_log row was written (delivery hunt: 5
sent, then a limit of 2 per hour, and 2 more went out at once). Both backends."""

from __future__ import annotations

import json
import time

from mail_proxy.delivery import ratelimit
from mail_proxy.manager import accounts, tenants
from tests.support import factories as f


async def _all_sent(core, at: int) -> None:
    """Play the sends of a worker while nothing was limited: no send_log rows."""
    statement = f"UPDATE messages SET status = 'sent', sent_at = {at}"
    if core.store.backend == "sqlite":
        async with core.store.transaction() as tx:
            await tx.raw(statement)
    else:
        async with core.store._pool.acquire() as conn:
            await conn.execute(statement)


async def _left(core, account_id: str = "main") -> int | None:
    row = await core.store.fetch_one("dispatch_account_config", tenant_id="acme",
                                     account_id=account_id)
    tenant = json.loads(row["tenant_rate_limits"]) if row["tenant_rate_limits"] else None
    limits = ratelimit.Limits.from_config(row, tenant)
    left, _ = await ratelimit.remaining(core.store, "acme", account_id, limits,
                                        int(time.time()))
    return left


async def test_a_new_account_limit_counts_the_sends_made_before_it(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.enqueue(core, *[f.message(i) for i in range(1, 6)])
    await _all_sent(core, int(time.time()) - 60)
    await accounts.patch_account(core, "acme", "main", {"limit_per_hour": 7}, None)
    assert await _left(core) == 2
    # written again (another field, the same limit): nothing is logged twice
    await accounts.patch_account(core, "acme", "main", {"batch_size": 10}, None)
    await accounts.patch_account(core, "acme", "main", {"limit_per_hour": 8}, None)
    assert await _left(core) == 3


async def test_a_new_tenant_limit_counts_the_sends_of_every_account(core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    await f.account(core, 2525, account_id="second")
    await f.enqueue(core, f.message(1, account_id="main"), f.message(2, account_id="second"))
    await _all_sent(core, int(time.time()) - 60)
    await tenants.patch_tenant(core, "acme", {"rate_limits": {"per_hour": 5}}, None)
    assert await _left(core) == 3
