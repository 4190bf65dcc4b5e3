"""Driving a Dispatcher in tests without its background loop."""

from __future__ import annotations

import asyncio

from mail_proxy.delivery.dispatcher import Dispatcher


async def drive(dispatcher: Dispatcher, timeout: float = 10.0) -> None:
    """Run cycles until nothing is held and no claim happens, or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        # As Dispatcher.run does: a wake-up raised during the cycle (a lane at low water
        # while its claim was being planned) asks for another cycle. Without this check a
        # cycle that planned while the lane was still stocked, then saw it drain, looked
        # like the end (one run in eight of the starvation test stopped at 52 of 152).
        dispatcher._wake.clear()
        claimed = await dispatcher.run_once()
        await asyncio.sleep(0.01)
        if claimed == 0 and dispatcher.held == 0 and not dispatcher._wake.is_set():
            return
    raise AssertionError("dispatcher did not settle")
