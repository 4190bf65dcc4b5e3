"""Shared helpers of the delivery-engine audit tests (issue 7); no tests live here.

The audit drives the real dispatcher against the scriptable aiosmtpd server. A few helpers
reach into the dispatcher to freeze it between the claim and the send (the window in which
a tenant can be deactivated or an account deleted), because that window is otherwise a few
microseconds wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from mail_proxy.delivery import accounts as accounts_module
from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager.core import Core
from mail_proxy.manager.messages import get_message
from tests.support import factories as f
from tests.support.dispatching import drive

OWNER = "audit:1:0000aaaa"


def make(core: Core, owner: str = OWNER, *, connect_timeout: float = 2,
         send_timeout: float = 2) -> Dispatcher:
    """A dispatcher whose pool uses short timeouts (the worker passes the settings)."""
    pools = SmtpPools(ehlo_name="audit.test", connect_timeout=connect_timeout,
                      send_timeout=send_timeout)
    return Dispatcher(core, owner=owner, smtp=pools)


async def settle(d: Dispatcher, timeout: float = 10.0) -> None:
    await drive(d, timeout=timeout)
    # throttle step-downs are written by background tasks of the sender
    if d.sender._background:
        await asyncio.gather(*list(d.sender._background))


async def deliver(core: Core, **pool_timeouts: float) -> None:
    """A fresh dispatcher runs until nothing is left to do, then closes its connections."""
    d = make(core, **pool_timeouts)
    try:
        await settle(d)
    finally:
        await d.smtp.close()


async def message(core: Core, message_id: str, tenant_id: str = "acme") -> dict[str, Any]:
    return await get_message(core, tenant_id, message_id)


def spy_data(server: Any) -> list[bytes]:
    """Every DATA payload the server receives, including the ones it then refuses."""
    seen: list[bytes] = []
    original = server.handler.handle_DATA

    async def spy(srv: Any, session: Any, envelope: Any) -> Any:
        seen.append(bytes(envelope.original_content or b""))
        return await original(srv, session, envelope)

    server.handler.handle_DATA = spy  # hooks are looked up per connection
    return seen


@contextlib.asynccontextmanager
async def sends_blocked(d: Dispatcher) -> AsyncIterator[None]:
    """Hold every worker send slot, so claimed messages wait at step 1 of delivery.md §3."""
    size = d._slots.size
    for _ in range(size):
        await d._slots.acquire()
    try:
        yield
    finally:
        for _ in range(size):
            d._slots.release()


def expire_config_cache(monkeypatch: Any) -> None:
    """Make the 5 s configuration cache (delivery.md §3 step 2) expire at once."""
    monkeypatch.setattr(accounts_module, "CONFIG_TTL", 0.0)


async def sql(core: Core, statement: str) -> None:
    """A raw write (test-made literals only), to play another worker or the passing of time."""
    async with core.store.transaction() as tx:
        await tx.raw(statement)


async def account_row(core: Core, account_id: str = "main",
                      tenant_id: str = "acme") -> dict[str, Any]:
    row = await core.store.fetch_one("dispatch_account_config", tenant_id=tenant_id,
                                     account_id=account_id)
    assert row is not None
    return dict(row)


def now() -> int:
    return int(time.time())


@contextlib.asynccontextmanager
async def one_claimed(core: Core, port: int, *, message: dict[str, Any] | None = None,
                      **account: Any) -> AsyncIterator[Dispatcher]:
    """Tenant ``acme``, account ``main`` on ``port``, one message claimed and held before
    its send (every send slot taken) for the body of the block; on leaving it the
    dispatcher runs until idle, then closes its connections."""
    core.settings.max_concurrent_sends = 1
    await f.tenant(core)
    await f.account(core, port, **account)
    await f.enqueue(core, message or f.message(1))
    d = make(core)
    try:
        async with sends_blocked(d):
            assert await d.run_once() == 1
            yield d
        await settle(d)
    finally:
        await d.smtp.close()
