"""Create-or-replace routes under real concurrency (api.md §6.2, §7.2, enterprise.md §2):
two requests creating the same tenant, account or suppression at once both succeed, one of
them as the creation. On PostgreSQL both read "absent" and the second insert meets the first
one's key: it is run again as a replace, never answered 409 with the driver's text."""

from __future__ import annotations

import asyncio
from typing import Any

from mail_proxy.manager import suppressions
from mail_proxy.manager.core import ADMIN, Core
from tests.support import factories as f

ROUNDS, AT_ONCE = 8, 6


async def _race(make: Any) -> list[Any]:
    return await asyncio.gather(*[make() for _ in range(AT_ONCE)], return_exceptions=True)


async def test_same_tenant_account_and_suppression_created_at_once(core: Core) -> None:
    for n in range(ROUNDS):
        tid = f"t{n}"
        outcomes = await _race(lambda tid=tid: f.tenant(core, tenant_id=tid))
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        outcomes = await _race(lambda tid=tid: f.account(core, 2525, tenant_id=tid))
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        outcomes = await _race(lambda tid=tid: suppressions.add_suppression(
            core, {"address": "bob@example.com", "reason": "asked"}, ADMIN, tid))
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failures, failures
        assert sum(1 for _, created in outcomes if created) == 1
