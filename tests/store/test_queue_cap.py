"""max_queued_messages (api.md §4.1 step 4): 429 queue_full, nothing stored, on both backends.

Far from the cap the count may be up to a second old (plus what this worker stored since);
from 90 % of the cap on it is exact, so the cap itself is never passed by one worker.
"""

from __future__ import annotations

import dataclasses

import pytest

from mail_proxy.manager.core import ADMIN, Core
from mail_proxy.manager.enqueue import add_messages
from mail_proxy.manager.queue_cap import QueueFull, waiting_count
from tests.support import factories as f


async def _send(core: Core, *ids: int) -> dict:
    return await add_messages(core, {"tenant_id": "acme",
                                     "messages": [f.message(i) for i in ids]}, ADMIN)


async def _waiting(core: Core) -> int:
    return int(await core.store.fetch_value("count_waiting"))


async def test_the_cap_refuses_the_request_that_would_pass_it(core: Core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    core.settings = dataclasses.replace(core.settings, max_queued_messages=10)
    assert (await _send(core, *range(6)))["queued"] == 6
    with pytest.raises(QueueFull, match="holds 6 messages and the limit is 10"):
        await _send(core, *range(100, 105))  # 6 + 5 > 10: none of the five is stored
    assert await _waiting(core) == 6
    assert (await _send(core, *range(200, 204)))["queued"] == 4  # exactly the cap
    with pytest.raises(QueueFull):
        await _send(core, 300)
    assert await _waiting(core) == 10


async def test_a_recent_count_is_used_far_from_the_cap(core: Core) -> None:
    await f.tenant(core)
    await f.account(core, 2525)
    core.settings = dataclasses.replace(core.settings, max_queued_messages=1000)
    counts = 0
    plain = core.store.fetch_value

    async def counting(query: str, **params: object) -> object:
        nonlocal counts
        counts += query == "count_waiting"
        return await plain(query, **params)

    core.store.fetch_value = counting  # type: ignore[method-assign]
    for i in range(5):
        await _send(core, i)
    assert counts == 1  # one count, then the count plus what was stored since
    assert waiting_count(core).counted + waiting_count(core).since == 5
    waiting_count(core).at -= 2  # older than a second: counted again
    await _send(core, 99)
    assert counts == 2
