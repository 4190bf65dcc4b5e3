"""The worker's resizable send slots (delivery/slots.py)."""

from __future__ import annotations

import asyncio

import pytest

from mail_proxy.delivery.slots import SendSlots


async def test_waiters_are_served_first_come_first_served() -> None:
    slots = SendSlots(1)
    await slots.acquire()
    order: list[int] = []

    async def take(n: int) -> None:
        await slots.acquire()
        order.append(n)

    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and slots.used == 1


async def test_a_larger_bound_admits_waiters_at_once_and_a_smaller_one_only_later() -> None:
    slots = SendSlots(1)
    await slots.acquire()
    waiting = [asyncio.create_task(slots.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    slots.resize(3)
    await asyncio.sleep(0)
    assert sum(t.done() for t in waiting) == 2 and slots.used == 3
    slots.resize(1)  # nobody is cut; nobody new gets in until used < 1
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert sum(t.done() for t in waiting) == 2 and slots.used == 1
    slots.release()
    await asyncio.sleep(0)
    assert all(t.done() for t in waiting) and slots.used == 1


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    slots = SendSlots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # cancelled while waiting
    with pytest.raises(asyncio.CancelledError):
        await waiter
    late = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # grants `late`...
    late.cancel()  # ...which is cancelled before it resumes: the slot goes back
    with pytest.raises(asyncio.CancelledError):
        await late
    assert slots.used == 0
