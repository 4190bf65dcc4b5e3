"""The dispatcher against a real in-process SMTP server."""

from __future__ import annotations

import asyncio
import email
import heapq

import pytest

from mail_proxy.delivery.dispatcher import Dispatcher, Lane
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager.core import now
from mail_proxy.manager.messages import counts, get_message
from tests.support import factories as f
from tests.support.dispatching import drive


def make_dispatcher(core, owner: str = "test:1:abcd") -> Dispatcher:
    return Dispatcher(core, owner=owner, smtp=SmtpPools(ehlo_name="test.local"))


async def test_messages_are_delivered_once_and_marked_sent(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    answer = await f.enqueue(core, *[f.message(i) for i in range(20)])
    assert answer["queued"] == 20
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    assert (await counts(core, "acme"))["sent"] == 20
    ids = sorted(email.message_from_bytes(m.data)["X-Mail-Proxy-ID"] for m in smtp_server.messages)
    assert ids == sorted(f"m-{i}" for i in range(20))
    msg = await get_message(core, "acme", "m-3")
    assert msg["status"] == "sent" and msg["attempts"] == 1
    assert [e["event_type"] for e in msg["events"]] == ["sent"]
    await dispatcher.smtp.close()


async def test_a_claim_landing_as_the_last_send_loop_returns_is_still_sent(core,
                                                                          smtp_server) -> None:
    """A send loop that found its lane empty has returned, but stays in ``lane.tasks``
    until its done-callback runs; a claim resuming in between must still start a loop."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await f.enqueue(core, *[f.message(i) for i in range(3)])
    dispatcher = make_dispatcher(core)

    async def returned() -> None:
        return None

    loop_that_returned = asyncio.create_task(returned())
    await loop_that_returned
    # in the lane's task set, as between its return and its done-callback
    dispatcher.lanes[("acme", "main")] = Lane(("acme", "main"), tasks={loop_that_returned})
    assert await dispatcher.run_once() == 3
    await drive(dispatcher, timeout=3)
    assert (await counts(core, "acme"))["sent"] == 3
    await dispatcher.smtp.close()


async def test_a_lane_left_without_send_loops_is_restarted_by_the_next_cycle(
        core, smtp_server) -> None:
    """The safety net behind the case above: held messages never wait for a claim."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await f.enqueue(core, *[f.message(i) for i in range(3)])
    dispatcher = make_dispatcher(core)
    lane = Lane(("acme", "main"))
    for msg in await dispatcher._claim(now()):  # claimed, but no loop started
        heapq.heappush(lane.heap, (msg.order, msg))
    dispatcher.lanes[lane.key] = lane
    assert len(lane.heap) == 3 and not lane.tasks
    await drive(dispatcher, timeout=3)
    assert (await counts(core, "acme"))["sent"] == 3
    await dispatcher.smtp.close()


async def test_priority_zero_is_claimed_first(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await f.enqueue(core, *[f.message(i, priority=3) for i in range(5)])
    await f.enqueue(core, f.message("urgent", priority="immediate"))
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    first = email.message_from_bytes(smtp_server.messages[0].data)["X-Mail-Proxy-ID"]
    assert first == "m-urgent"
    await dispatcher.smtp.close()


async def test_permanent_refusal_ends_in_error_with_reason(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(rcpt={"rcpt1@example.com": "550 5.1.1 User unknown"})
    await f.enqueue(core, f.message(1))
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "error"
    assert msg["last_error_code"] == "all_recipients_refused"
    assert "550 5.1.1 User unknown" in msg["last_error"]
    await dispatcher.smtp.close()


async def test_transient_failure_is_deferred_with_attempt_counted(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(data="452 4.3.1 Insufficient system storage")
    await f.enqueue(core, f.message(1))
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "deferred" and msg["attempts"] == 1
    assert msg["last_error_code"] == "smtp_transient"
    assert msg["next_attempt_at"] >= msg["updated_at"] + 50
    await dispatcher.smtp.close()


async def test_deferred_ts_in_the_future_waits(core, smtp_server) -> None:
    import time

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1, deferred_ts=time.time() + 3600))
    dispatcher = make_dispatcher(core)
    await drive(dispatcher)
    assert smtp_server.messages == []
    assert (await counts(core, "acme"))["deferred"] == 1
    await dispatcher.smtp.close()


async def test_attachments_are_fetched_and_attached(core, smtp_server, tmp_path) -> None:
    import base64
    import hashlib

    from mail_proxy.delivery.attachments.fetcher import AttachmentFetcher

    content = b"%PDF-1.4 invoice bytes"
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "terms.txt").write_bytes(b"terms and conditions")
    core.settings.attachment_roots = [str(tmp_path / "files")]
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    md5 = hashlib.md5(content).hexdigest()
    await f.enqueue(core, f.message(1, attachments=[
        {"filename": f"inv_{{MD5:{md5}}}.pdf",
         "storage_path": "base64:" + base64.b64encode(content).decode()},
        {"filename": "terms.txt", "storage_path": str(tmp_path / "files" / "terms.txt")}]))
    fetcher = AttachmentFetcher(core.settings, cache_dir=tmp_path / "cache")
    dispatcher = Dispatcher(core, owner="t:1:aa", smtp=SmtpPools(ehlo_name="test.local"),
                            fetcher=fetcher)
    await drive(dispatcher)
    parsed = email.message_from_bytes(smtp_server.messages[0].data)
    parts = {p.get_filename(): p.get_payload(decode=True) for p in parsed.walk()
             if p.get_filename()}
    assert parts == {"inv.pdf": content, "terms.txt": b"terms and conditions"}
    await dispatcher.smtp.close()
    await fetcher.close()


async def test_missing_attachment_fails_permanently_naming_it(core, smtp_server,
                                                              tmp_path) -> None:
    from mail_proxy.delivery.attachments.fetcher import AttachmentFetcher

    (tmp_path / "files").mkdir()
    core.settings.attachment_roots = [str(tmp_path / "files")]
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1, attachments=[
        {"filename": "gone.pdf", "storage_path": str(tmp_path / "files" / "gone.pdf")}]))
    fetcher = AttachmentFetcher(core.settings, cache_dir=None)
    dispatcher = Dispatcher(core, owner="t:1:aa", smtp=SmtpPools(ehlo_name="test.local"),
                            fetcher=fetcher)
    await drive(dispatcher)
    msg = await get_message(core, "acme", "m-1")
    assert msg["status"] == "error" and msg["last_error_code"] == "attachment_not_found"
    assert "gone.pdf" in msg["last_error"]
    assert smtp_server.messages == []
    await dispatcher.smtp.close()
    await fetcher.close()


async def test_two_dispatchers_on_one_database_deliver_everything_once(core,
                                                                      smtp_server) -> None:
    """Two running workers sharing the queue, one connection each: lanes drain and refill
    all the time."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1, batch_size=4)
    total = 300
    for start in range(0, total, 100):
        await f.enqueue(core, *[f.message(i) for i in range(start, start + 100)])
    workers = [make_dispatcher(core, "test:1:aaaa"), make_dispatcher(core, "test:2:bbbb")]
    loops = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with asyncio.timeout(30):
            while True:  # the sends are the workers' own; the test can only poll
                if (await counts(core, "acme"))["sent"] >= total:
                    break
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            await w.drain(5)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for w in workers:
            await w.smtp.close()
    ids = [email.message_from_bytes(m.data)["X-Mail-Proxy-ID"] for m in smtp_server.messages]
    assert sorted(ids) == sorted(f"m-{i}" for i in range(total))


async def test_a_drain_counts_each_send_once(core, smtp_server, caplog) -> None:
    caplog.set_level("INFO", logger="mail_proxy.delivery")
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1)
    await f.enqueue(core, f.message(1))
    smtp_server.script(hang="greeting")  # the send loop waits for its send to go out
    dispatcher = make_dispatcher(core)
    assert await dispatcher.run_once() == 1
    for _ in range(200):
        if smtp_server.connections:
            break
        await asyncio.sleep(0.01)
    await dispatcher.drain(0.2)
    assert "waiting up to 0 s for 1 sends in progress" in caplog.text
    assert "drain: 1 sends cut off" in caplog.text
    await dispatcher.smtp.close()


@pytest.mark.parametrize("limit_per_day", [None, 100_000])
async def test_an_immediate_message_overtakes_claimed_ones_under_a_generous_limit(
        core, smtp_server, limit_per_day: int | None) -> None:
    """Scheduling hunt: with any rate limit on its account, a priority-0 message waited
    behind half a batch of claimed low ones (4.3 s) instead of overtaking them (0.2 s)."""
    await f.tenant(core)
    await f.account(core, smtp_server.port, max_connections=1, limit_per_day=limit_per_day)
    smtp_server.script(data_delay=0.02)
    await f.enqueue(core, *[f.message(i, priority=3) for i in range(40)])
    dispatcher = make_dispatcher(core)
    runner = asyncio.create_task(drive(dispatcher, timeout=20))
    try:
        while len(smtp_server.messages) < 2:  # noqa: ASYNC110 - a list the server fills
            await asyncio.sleep(0.01)
        await f.enqueue(core, f.message("urgent", priority="immediate"))
        dispatcher.wake()
        await runner
    finally:
        await dispatcher.smtp.close()
    order = [email.message_from_bytes(m.data)["X-Mail-Proxy-ID"] for m in smtp_server.messages]
    assert order.index("m-urgent") < 8, order.index("m-urgent")
