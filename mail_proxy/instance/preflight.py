"""Checks `start` makes before it forks anything, so that a problem is one clear line.

The database is opened (which applies pending migrations: `start` owns the upgrade of a new
or stopped instance, data.md §3), and every encrypted value in it must be readable with this
instance's key ring: an instance joining a shared PostgreSQL database without the ring that
encrypted its secrets is refused here, instead of starting and failing every send.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mail_proxy.errors import ConfigurationError


async def _check(config: Any, creating: bool) -> None:
    from mail_proxy.security.crypto import KeyRing
    from mail_proxy.store import open_store
    from mail_proxy.store.keycheck import missing_kids, refusal_message

    keyring = await asyncio.to_thread(KeyRing.load, config.folder)
    store = open_store(config.db_url, pool_size=1, password=config.db_password)
    await store.open()
    try:
        missing = await missing_kids(store, keyring)
    finally:
        await store.close()
    if missing:
        raise ConfigurationError(refusal_message(missing, config.name, creating=creating))


def preflight(config: Any, *, creating: bool = False) -> None:
    asyncio.run(_check(config, creating))
