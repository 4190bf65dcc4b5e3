"""Report scheduling: concurrency, do-not-disturb, switches, leases, settlement and purge."""

from __future__ import annotations

import asyncio
import time

from mail_proxy import housekeeping
from mail_proxy.manager.core import ADMIN
from mail_proxy.manager.messages import get_message
from mail_proxy.manager.tenants import patch_tenant
from mail_proxy.reports.reporter import Reporter
from tests.support import factories as f
from tests.support.receiver import Receiver, Reply, configure, deliver, rows


def reporter(core, owner: str = "test:report") -> Reporter:
    return Reporter(core, owner=owner)


async def pending(core, tenant_id: str) -> int:
    return (await rows(core, "SELECT count(*) AS n FROM message_events WHERE tenant_id = ? "
                             "AND reportable = 1 AND reported_at IS NULL", tenant_id))[0]["n"]


async def tenant_row(core, tenant_id: str = "acme") -> dict:
    return (await rows(core, "SELECT * FROM tenants WHERE id = ?", tenant_id))[0]


async def test_hanging_tenant_does_not_delay_another(core, smtp_server) -> None:
    configure(core, report_timeout=3)
    async with Receiver() as slow, Receiver() as fast:
        for tid, rx in (("slow", slow), ("fast", fast)):
            await f.tenant(core, tid, client_base_url=rx.url)
            await f.account(core, smtp_server.port, tenant_id=tid)
        slow.default = Reply(delay=10)  # longer than report_timeout
        await deliver(core, smtp_server.port, f.message("s1"), tenant_id="slow")
        await deliver(core, smtp_server.port, f.message("f1"), tenant_id="fast")

        rep = reporter(core)
        task = asyncio.create_task(rep.run())
        try:
            await slow.wait_calls(1, timeout=2)
            await fast.wait_calls(1, timeout=2)
            # While the slow call is still hanging, a new event of the fast tenant is
            # reported at once when the reporter is woken.
            await deliver(core, smtp_server.port, f.message("f2"), tenant_id="fast")
            woken = time.monotonic()
            rep.wake("fast")
            await fast.wait_calls(2, timeout=1)
            assert fast.calls[1].received_at - woken < 0.5
            assert [e["id"] for e in fast.calls[1].entries] == ["m-f2"]
            assert len(slow.calls) == 1 and time.monotonic() - slow.calls[0].received_at < 3
        finally:
            await rep.stop(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert await pending(core, "fast") == 0
        assert await pending(core, "slow") == 1


async def test_scan_finds_events_written_elsewhere(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        rep = reporter(core)
        task = asyncio.create_task(rep.run())
        try:
            await rx.wait_calls(1)  # first contact: idle poll
            await deliver(core, smtp_server.port, f.message(1))  # no wake: found by the scan
            calls = await rx.wait_calls(2, timeout=3.5)
            assert [e["id"] for e in calls[1].entries] == ["m-1"]
        finally:
            await rep.stop(1)
            await asyncio.gather(task, return_exceptions=True)


async def test_next_sync_after_is_capped_and_only_silences_idle_polls(core,
                                                                    smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        rx.script(Reply(next_sync_after=int(time.time()) + 10 * 86400))
        rep = reporter(core)
        assert await rep.run_once() == 1
        dnd = (await tenant_row(core))["report_dnd_until"]
        assert abs(dnd - (time.time() + 86400)) < 5

        # Make the idle poll overdue: do-not-disturb still holds it back.
        async with core.store.transaction() as tx:
            await tx.raw("UPDATE tenants SET last_report_at = 0")
        assert await rep.run_once() == 0
        # A call carrying events is still made.
        rx.script(Reply(next_sync_after=int(time.time()) + 3600))
        await deliver(core, smtp_server.port, f.message(1))
        assert await rep.run_once() == 1
        assert [e["id"] for e in rx.calls[1].entries] == ["m-1"]
        assert (await tenant_row(core))["report_dnd_until"] > time.time() + 3000
        # run-now for the tenant clears do-not-disturb and calls.
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert (await tenant_row(core))["report_dnd_until"] is None
        assert len(rx.calls) == 3


async def test_run_now_for_a_tenant_clears_backoff(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        rx.script(Reply(status=500))
        rep = reporter(core)
        assert await rep.run_once() == 1
        assert (await tenant_row(core))["report_backoff_until"] is not None
        rep.wake(None)  # run-now without tenant respects backoff
        assert await rep.run_once() == 0
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        await rep.stop(1)
        state = await tenant_row(core)
        assert state["report_backoff_until"] is None and state["report_failures"] == 0


async def test_reporting_disabled_makes_no_calls(core, smtp_server) -> None:
    configure(core, reporting_enabled=False)
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        rep = reporter(core)
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 0
        await asyncio.sleep(0.1)
        assert rx.calls == []
        configure(core, reporting_enabled=True)
        assert await rep.run_once() == 1
        await rep.stop(1)


async def test_tenant_without_url_never_blocks_and_settles_at_once(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "quiet")
        await f.account(core, smtp_server.port, tenant_id="quiet")
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1), tenant_id="quiet")
        await deliver(core, smtp_server.port, f.message(2))
        quiet = await rows(core, "SELECT e.reportable, m.settled_at FROM message_events e "
                                 "JOIN messages m ON m.pk = e.message_pk "
                                 "WHERE e.tenant_id = 'quiet'")
        assert quiet == [{"reportable": 0, "settled_at": quiet[0]["settled_at"]}]
        assert quiet[0]["settled_at"] is not None
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert [e["id"] for e in rx.calls[0].entries] == ["m-2"]


async def test_inactive_tenant_keeps_pending_events(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        await patch_tenant(core, "acme", {"active": False}, ADMIN)
        rep = reporter(core)
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 0
        assert rx.calls == [] and await pending(core, "acme") == 1
        await patch_tenant(core, "acme", {"active": True}, ADMIN)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert await pending(core, "acme") == 0


async def test_lease_held_elsewhere_means_no_call(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        async with core.store.transaction() as tx:
            await tx.execute("lease_acquire", name="report:acme", me="other:worker",
                             now=int(time.time()), ttl=60)
        rep = reporter(core)
        assert await rep.run_once() == 0
        assert rx.calls == []
        # Busy tenants are looked at again at the next scan, not in a tight loop.
        assert await rep.run_once() == 0
        await rep.stop(1)
        async with core.store.transaction() as tx:
            await tx.execute("lease_release", name="report:acme", me="other:worker")
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
        leases = await rows(core, "SELECT * FROM leases WHERE name = 'report:acme'")
        assert leases == []  # given back after the turn


async def test_stop_lets_the_call_in_flight_finish(core, smtp_server) -> None:
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        rx.default = Reply(delay=0.5)
        rep = reporter(core)
        task = asyncio.create_task(rep.run())
        await rx.wait_calls(1)
        await rep.stop(5)
        await asyncio.gather(task, return_exceptions=True)
        assert await pending(core, "acme") == 0


async def test_reported_messages_are_purged_after_retention_unreported_are_not(
        core, smtp_server) -> None:
    configure(core, report_retention_seconds=0)
    async with Receiver() as ok_rx, Receiver() as down_rx:
        await f.tenant(core, "acme", client_base_url=ok_rx.url)
        await f.account(core, smtp_server.port)
        await f.tenant(core, "down", client_base_url=down_rx.url)
        await f.account(core, smtp_server.port, tenant_id="down")
        down_rx.default = Reply(status=500)
        await deliver(core, smtp_server.port, f.message(1))
        await deliver(core, smtp_server.port, f.message(2), tenant_id="down")
        rep = reporter(core)
        assert await rep.run_once() == 2
        await rep.stop(1)
        await asyncio.sleep(1.05)  # settled_at must be strictly older than now - 0
        done = await housekeeping.run_once(core, "test:housekeeping")
        assert done["messages"] == 1
        remaining = await rows(core, "SELECT tenant_id, id FROM messages")
        assert remaining == [{"tenant_id": "down", "id": "m-2"}]
        assert (await get_message(core, "down", "m-2"))["status"] == "sent"
        assert await rows(core, "SELECT id FROM message_events WHERE tenant_id = 'acme'") == []


async def test_refused_events_go_out_again_after_an_idle_interval_even_in_do_not_disturb(
        core, smtp_server, monkeypatch) -> None:
    import mail_proxy.reports.reporter as reporter_module

    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        rx.script(Reply(error=["m-1"], next_sync_after=int(time.time()) + 3600))
        rep = reporter(core)
        assert await rep.run_once() == 1
        assert await pending(core, "acme") == 1
        assert await rep.run_once() == 0  # not again at once: "in later calls"
        # One idle interval later (300 s) the refused event is due again, although the
        # answer asked for an hour of do-not-disturb (before: held until another event came).
        later = time.time() + 301
        real_monotonic = time.monotonic

        class Clock:
            monotonic = staticmethod(real_monotonic)

            @staticmethod
            def time() -> float:
                return later

        monkeypatch.setattr(reporter_module, "time", Clock)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert [e["id"] for e in rx.calls[1].entries] == ["m-1"]
        assert await pending(core, "acme") == 0
