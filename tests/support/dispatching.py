"""Driving a Dispatcher in tests without its background loop."""

from __future__ import annotations

import asyncio

from mail_proxy.delivery.dispatcher import Dispatcher


async def drive(dispatcher: Dispatcher, timeout: float = 10.0) -> None:
    """Run cycles until nothing is held and no claim happens, or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        claimed = await dispatcher.run_once()
        await asyncio.sleep(0.01)
        if claimed == 0 and dispatcher.held == 0:
            return
    raise AssertionError("dispatcher did not settle")
