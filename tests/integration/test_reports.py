"""Delivery reports against a real tenant receiver (reports.md §1-§4)."""

from __future__ import annotations

import base64
import time

from mail_proxy.metrics import Metrics
from mail_proxy.reports.reporter import Reporter
from tests.support import factories as f
from tests.support.receiver import Receiver, Reply, configure, deliver, rows

SECRET = "a-signing-secret-of-at-least-32-chars"


async def setup(core, smtp_server, rx: Receiver, tenant_id: str = "acme", **tenant) -> None:
    await f.tenant(core, tenant_id, client_base_url=rx.url, **tenant)
    await f.account(core, smtp_server.port, tenant_id=tenant_id)


def reporter(core, metrics: Metrics | None = None) -> Reporter:
    return Reporter(core, owner="test:report", metrics=metrics)


async def events(core, tenant_id: str = "acme") -> list[dict]:
    return await rows(core, "SELECT e.id, e.event_type, e.reported_at, e.report_attempts, "
                            "e.reportable, m.id AS mid, m.settled_at FROM message_events e "
                            "JOIN messages m ON m.pk = e.message_pk WHERE e.tenant_id = ? "
                            "ORDER BY e.id", tenant_id)


async def tenant_row(core, tenant_id: str = "acme") -> dict:
    return (await rows(core, "SELECT * FROM tenants WHERE id = ?", tenant_id))[0]


async def test_report_is_signed_authenticated_and_acknowledged(core, smtp_server) -> None:
    configure(core, report_timeout=2)
    async with Receiver(secret=SECRET) as rx:
        await setup(core, smtp_server, rx, signing_secret=SECRET,
                    client_auth={"method": "bearer", "token": "tok-123"})
        smtp_server.script(rcpt={"rcpt2@example.com": "550 5.1.1 User unknown"})
        await deliver(core, smtp_server.port, f.message(1), f.message(2))
        before = await events(core)
        assert [e["reported_at"] for e in before] == [None, None]
        assert all(e["settled_at"] is None for e in before)

        metrics = Metrics(version="test", database="sqlite")
        rep = reporter(core, metrics)
        assert await rep.run_once() == 1
        await rep.stop(1)

        call = rx.calls[0]
        assert call.path == "/mail-proxy/sync"
        assert call.signature_ok is True
        assert call.headers["authorization"] == "Bearer tok-123"
        assert call.headers["user-agent"] == "mail-proxy/1.0.0"
        assert call.headers["content-type"] == "application/json"
        by_id = {e["id"]: e for e in call.entries}
        sent, error = by_id["m-1"], by_id["m-2"]
        assert {"sent_ts", "event_id", "attempt", "smtp_code", "message_id"} <= set(sent)
        assert sent["smtp_code"] == 250 and sent["message_id"].startswith("<")
        assert error["error"].startswith("550 5.1.1") and error["code"] == \
            "all_recipients_refused"
        assert all("tenant_id" not in e for e in call.entries)
        assert [e["event_id"] for e in call.entries] == [e["id"] for e in before]

        after = await events(core)
        assert all(e["reported_at"] is not None for e in after)
        assert all(e["settled_at"] is not None for e in after)
        state = await tenant_row(core)
        assert state["last_report_at"] is not None and state["report_failures"] == 0
        assert metrics.reports_total.labels(tenant_id="acme", outcome="ok")._value.get() == 1

        # Nothing pending and the idle poll is not due: no further call.
        rep2 = reporter(core)
        assert await rep2.run_once() == 0
        await rep2.stop(1)
        assert len(rx.calls) == 1


async def test_receiver_detects_a_wrong_signature_and_basic_auth(core, smtp_server) -> None:
    async with Receiver(secret="the-receiver-expects-another-secret!!") as rx:
        await setup(core, smtp_server, rx, signing_secret=SECRET,
                    client_auth={"method": "basic", "user": "app", "password": "pw:x"})
        rep = reporter(core)
        assert await rep.run_once() == 1  # first contact: an idle poll
        await rep.stop(1)
        assert rx.calls[0].entries == [] and rx.calls[0].raw == b'{"delivery_report":[]}'
        assert rx.calls[0].signature_ok is False
        assert rx.calls[0].headers["authorization"] == \
            "Basic " + base64.b64encode(b"app:pw:x").decode()


async def test_http_500_backs_off_and_retries_later(core, smtp_server) -> None:
    configure(core, report_timeout=2, report_backoff_max=300)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1))
        rx.script(Reply(status=500), Reply(status=503))
        metrics = Metrics(version="test", database="sqlite")
        rep = reporter(core, metrics)

        assert await rep.run_once() == 1
        state = await tenant_row(core)
        assert state["report_failures"] == 1
        assert state["report_backoff_until"] >= time.time() + 0.5
        assert (await events(core))[0]["reported_at"] is None
        assert await rep.run_once() == 0  # still in backoff
        assert len(rx.calls) == 1

        await _wait_until(state["report_backoff_until"])
        assert await rep.run_once() == 1
        state = await tenant_row(core)
        assert state["report_failures"] == 2
        assert state["report_backoff_until"] - time.time() > 1  # 2 s after the second failure

        await _wait_until(state["report_backoff_until"])
        assert await rep.run_once() == 1
        await rep.stop(1)
        state = await tenant_row(core)
        assert state["report_failures"] == 0 and state["report_backoff_until"] is None
        assert (await events(core))[0]["reported_at"] is not None
        assert [c.entries[0]["id"] for c in rx.calls] == ["m-1"] * 3
        value = metrics.reports_total.labels(tenant_id="acme", outcome="http_error")._value
        assert value.get() == 2


async def _wait_until(epoch: float) -> None:
    import asyncio

    await asyncio.sleep(max(epoch - time.time(), 0) + 0.05)


async def test_forced_calls_that_fail_do_not_climb_the_backoff(core, smtp_server) -> None:
    """run-now with a tenant clears the wait and calls at once; when such calls fail, the
    failure count stays where it was (a QA pass saw five forced calls push the next try of a
    dead receiver from 16 s to the 300 s cap in two seconds)."""
    configure(core, report_timeout=2, report_backoff_max=300)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1))
        rx.default = Reply(status=500)
        rep = reporter(core)
        assert await rep.run_once() == 1
        assert (await tenant_row(core))["report_failures"] == 1
        for _ in range(4):
            rep.wake("acme", forced=True)
            assert await rep.run_once() == 1
        await rep.stop(1)
        state = await tenant_row(core)
        assert state["report_failures"] == 1
        assert state["report_backoff_until"] - time.time() <= 2
        assert len(rx.calls) == 5


async def test_timeout_is_a_failure_and_keeps_events(core, smtp_server) -> None:
    configure(core, report_timeout=1)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1))
        rx.script(Reply(delay=10))
        metrics = Metrics(version="test", database="sqlite")
        rep = reporter(core, metrics)
        started = time.monotonic()
        assert await rep.run_once() == 1
        assert 0.9 < time.monotonic() - started < 3
        await rep.stop(1)
        assert metrics.reports_total.labels(tenant_id="acme", outcome="timeout")._value.get() == 1
        assert (await tenant_row(core))["report_failures"] == 1
        assert (await events(core))[0]["reported_at"] is None


async def test_redirect_is_not_followed(core, smtp_server) -> None:
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        rx.script(Reply(status=307))
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert (await tenant_row(core))["report_failures"] == 1


async def test_error_and_not_found_lists(core, smtp_server) -> None:
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, *[f.message(i) for i in range(3)])
        rx.script(Reply(error=["m-0"], not_found=["m-1"]))
        rep = reporter(core)
        assert await rep.run_once() == 1
        by_mid = {e["mid"]: e for e in await events(core)}
        assert by_mid["m-0"]["reported_at"] is None and by_mid["m-0"]["report_attempts"] == 1
        assert by_mid["m-0"]["settled_at"] is None
        for mid in ("m-1", "m-2"):
            assert by_mid[mid]["reported_at"] is not None and by_mid[mid]["settled_at"]
            assert by_mid[mid]["report_attempts"] == 0

        # The refused event waits for the next call made for another reason...
        assert await rep.run_once() == 0
        # ...such as run-now for the tenant, which sends it again.
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert [e["id"] for e in rx.calls[1].entries] == ["m-0"]
        m0 = {e["mid"]: e for e in await events(core)}["m-0"]
        assert m0["reported_at"] is not None and m0["settled_at"] is not None


async def test_event_is_abandoned_after_max_rejections(core, smtp_server) -> None:
    configure(core, report_max_rejections=3)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1))
        rx.default = Reply(error=["m-1"])
        metrics = Metrics(version="test", database="sqlite")
        rep = reporter(core, metrics)
        for attempt in (1, 2):
            rep.wake("acme", forced=True)
            assert await rep.run_once() == 1
            event = (await events(core))[0]
            assert event["report_attempts"] == attempt and event["reported_at"] is None
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        event = (await events(core))[0]
        assert event["report_attempts"] == 3 and event["reported_at"] is not None
        assert event["settled_at"] is not None
        abandoned = metrics.reports_total.labels(tenant_id="acme", outcome="abandoned")._value
        assert abandoned.get() == 1
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert rx.calls[-1].entries == []


async def test_queued_accelerates_up_to_the_cap_without_resending_refused(core,
                                                                          smtp_server) -> None:
    configure(core, report_max_accelerated=2)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1), f.message(2))
        rx.script(Reply(queued=3, error=["m-1"]))
        rx.default = Reply(queued=3)
        rep = reporter(core)
        assert await rep.run_once() == 3  # the call plus two accelerated ones
        await rep.stop(1)
        assert {e["id"] for e in rx.calls[0].entries} == {"m-1", "m-2"}
        assert rx.calls[1].entries == [] and rx.calls[2].entries == []
        m1 = {e["mid"]: e for e in await events(core)}["m-1"]
        assert m1["reported_at"] is None and m1["report_attempts"] == 1


async def test_full_batches_drain_at_once(core, smtp_server) -> None:
    configure(core, report_batch_size=2, report_max_accelerated=0)
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, *[f.message(i) for i in range(5)])
        rep = reporter(core)
        assert await rep.run_once() == 3
        await rep.stop(1)
        assert [len(c.entries) for c in rx.calls] == [2, 2, 1]
        ids = [e["event_id"] for c in rx.calls for e in c.entries]
        assert ids == sorted(ids)
        assert all(e["reported_at"] for e in await events(core))


async def test_non_json_answer_still_acknowledges(core, smtp_server) -> None:
    async with Receiver() as rx:
        await setup(core, smtp_server, rx)
        await deliver(core, smtp_server.port, f.message(1))
        rx.script(Reply(raw=b"<html>thanks</html>"))
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert (await events(core))[0]["reported_at"] is not None
