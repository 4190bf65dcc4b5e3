"""Periodic clean-up under the shared ``housekeeping`` lease (delivery.md §1, messages.md §8).

Only one worker sharing a database does the database part at a time; every worker evicts
its own attachment cache.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mail_proxy.manager.core import Core, now

log = logging.getLogger("mail_proxy.housekeeping")
INTERVAL = 600
LEASE_TTL = 300


async def run_once(core: Core, owner: str, fetcher: Any | None = None) -> dict[str, int]:
    done: dict[str, int] = {}
    if fetcher is not None:
        await fetcher.evict_expired()
    async with core.store.transaction() as tx:
        got = await tx.execute("lease_acquire", name="housekeeping", me=owner, now=now(),
                               ttl=LEASE_TTL)
    if not got:
        return done
    try:
        from mail_proxy.manager.messages import cleanup_messages

        settings = core.settings
        done["messages"] = (await cleanup_messages(core, None))["removed"]
        async with core.store.transaction() as tx:
            done["send_log"] = await tx.execute("send_log_prune", before=now() - 86400)
        if settings.command_log_retention_days:
            async with core.store.transaction() as tx:
                done["command_log"] = await tx.execute(
                    "command_log_prune", before=now() - settings.command_log_retention_days * 86400)
    finally:
        async with core.store.transaction() as tx:
            await tx.execute("lease_release", name="housekeeping", me=owner)
    if any(done.values()):
        log.info("housekeeping removed %s", ", ".join(f"{v} {k}" for k, v in done.items() if v))
    return done


async def loop(core: Core, owner: str, fetcher: Any | None = None) -> None:
    while True:
        try:
            await run_once(core, owner, fetcher)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("housekeeping failed: %s", exc)
        await asyncio.sleep(INTERVAL)
