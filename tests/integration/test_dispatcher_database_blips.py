"""The database going away in the middle of a send (a PostgreSQL restart, a full disk): the
message is never forgotten in `sending`, and a delivered one never goes back to the queue."""

from __future__ import annotations

import asyncio
from typing import Any

from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager.messages import get_message
from mail_proxy.store.errors import StoreUnavailable
from tests.support import factories as f
from tests.support.dispatching import drive


def failing(store: Any, name: str, outage: dict[str, bool]) -> None:
    real = getattr(store, name)

    async def call(*args: Any, **kwargs: Any) -> Any:
        if outage["on"]:
            raise StoreUnavailable("database error: server closed the connection")
        return await real(*args, **kwargs)

    setattr(store, name, call)


async def test_a_blip_before_the_transaction_gives_the_message_back(core, smtp_server,
                                                                    caplog) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    d = Dispatcher(core, owner="w:1:aaaa", smtp=SmtpPools(ehlo_name="t.local"))
    outage = {"on": False}
    failing(core.store, "fetch_one", outage)
    unretrieved: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: unretrieved.append(ctx))
    assert await d.run_once() == 1
    outage["on"] = True  # the send reads the account's configuration: the database is gone
    d.configs.forget()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not d.held:
            break
    outage["on"] = False
    # forgotten only once it is back in the queue: unattempted, and sent by a later cycle
    msg = await get_message(core, "acme", "m-1")
    assert d.held == 0 and msg["status"] == "queued" and msg["attempts"] == 0, msg
    assert "giving it back" in caplog.text
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1 and len(smtp_server.messages) == 1
    assert unretrieved == []
    await d.smtp.close()


async def test_a_blip_after_the_server_accepted_still_records_it_sent(core,
                                                                      smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, limit_per_minute=100)
    await f.enqueue(core, f.message(1))
    d = Dispatcher(core, owner="w:1:aaaa", smtp=SmtpPools(ehlo_name="t.local"))
    outage = {"on": False}
    failing(core.store, "grouped", outage)  # how the rate slot is settled
    original = smtp_server.handler.handle_DATA

    async def accept_then_fail(*args: Any) -> Any:
        answer = await original(*args)
        outage["on"] = True
        return answer

    smtp_server.handler.handle_DATA = accept_then_fail
    await drive(d)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "sent" and msg["attempts"] == 1, msg
    assert len(smtp_server.messages) == 1
    await d.smtp.close()


async def test_a_drain_without_the_database_still_waits_for_sends_in_flight(
        core, smtp_server, caplog) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await f.enqueue(core, *[f.message(i) for i in range(5)])
    d = Dispatcher(core, owner="w:1:aaaa", smtp=SmtpPools(ehlo_name="t.local"))
    assert await d.run_once() == 5
    await asyncio.sleep(0)  # the lane's send loop has taken its first message
    real = core.store.transaction

    def transaction() -> Any:  # how the unstarted ones are given back
        raise StoreUnavailable("database error: disk I/O error")

    core.store.transaction = transaction
    await d.drain(5)
    core.store.transaction = real
    assert "cannot give back 4 messages" in caplog.text
    sent = await get_message(core, "acme", "m-0")
    assert sent["status"] == "sent", sent
    assert (await get_message(core, "acme", "m-4"))["status"] == "sending"  # lease expires
    await d.smtp.close()

