"""Report calls with credentials that cannot go in a header, and the entries docs/reports.md
must describe (QA walkthrough 2026-11-24): a real tenant receiver, a real SMTP server."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from mail_proxy.metrics import Metrics
from mail_proxy.reports.client import CONNECTION_ERROR, ReportClient
from mail_proxy.reports.reporter import Reporter
from tests.support import factories as f
from tests.support.receiver import Receiver, configure, deliver, rows

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reports.md"
LEGACY_TOKEN = "s3cr3t-legacy\u2026token"  # stored before the API refused such tokens


def reporter(core, metrics: Metrics | None = None) -> Reporter:
    return Reporter(core, owner="test:report", metrics=metrics)


async def tenant_row(core, tenant_id: str = "acme") -> dict:
    return (await rows(core, "SELECT * FROM tenants WHERE id = ?", tenant_id))[0]


def turning_it_on_example() -> dict:
    """The JSON body of the PATCH shown under "Turning it on"."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Turning it on", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    request, _, body = block.group(1).partition("\n")
    assert request.startswith("PATCH /tenant/acme")
    return dict(json.loads(body))


async def test_the_documented_example_reports_with_its_token(core, smtp_server) -> None:
    """The example once carried the token "…": accepted by the API, then every report call
    failed in the worker with UnicodeEncodeError. Copied as is, it must work."""
    body = turning_it_on_example()
    token = body["client_auth"]["token"]
    async with Receiver(secret=body["signing_secret"]) as rx:
        await f.tenant(core, "acme", **{**body, "client_base_url": rx.url})
        await f.account(core, smtp_server.port)
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
    assert rx.calls[0].headers["authorization"] == f"Bearer {token}"
    assert rx.calls[0].signature_ok is True


async def test_a_stored_token_that_cannot_be_sent_is_a_counted_failed_call(
        core, smtp_server, caplog: pytest.LogCaptureFixture) -> None:
    configure(core, report_timeout=2)
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url,
                       client_auth={"method": "bearer", "token": "good-token"})
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        # What a tenant written before the check looks like in the database.
        stored = core.keyring.encrypt_json({"method": "bearer", "token": LEGACY_TOKEN})
        async with core.store.transaction() as tx:
            await tx.raw(f"UPDATE tenants SET client_auth = '{stored}' WHERE id = 'acme'")

        metrics = Metrics(version="test", database="sqlite")
        rep = reporter(core, metrics)
        with caplog.at_level(logging.DEBUG, logger="mail_proxy.reports"):
            assert await rep.run_once() == 1
        assert rx.calls == []  # nothing left the worker
        counted = metrics.reports_total.labels(tenant_id="acme", outcome=CONNECTION_ERROR)
        assert counted._value.get() == 1
        state = await tenant_row(core)
        assert state["report_failures"] == 1 and state["report_backoff_until"] > time.time()
        events = await rows(core, "SELECT reported_at FROM message_events WHERE "
                                  "tenant_id = 'acme' AND reportable = 1")
        assert events and all(e["reported_at"] is None for e in events)

        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1, lines
        assert "client_auth.token cannot be sent in an HTTP header" in lines[0]
        assert "tenant acme" in lines[0]
        every = "\n".join(r.getMessage() for r in caplog.records)
        assert "s3cr3t" not in every and "\u2026" not in every and "\\u2026" not in every

        # Set again through the manager, the next call goes through.
        await f.tenant(core, "acme", client_base_url=rx.url,
                       client_auth={"method": "bearer", "token": "fixed-token"})
        rep.wake("acme", forced=True)
        assert await rep.run_once() == 1
        await rep.stop(1)
        assert rx.calls[0].headers["authorization"] == "Bearer fixed-token"
        assert metrics.reports_total.labels(tenant_id="acme", outcome="ok")._value.get() == 1


async def test_any_error_of_a_call_is_a_failed_call_without_the_values() -> None:
    """Whatever stops the request (here a header httpx cannot encode) is an outcome, and
    its text never quotes the value (the headers hold credentials)."""
    client = ReportClient()
    async with Receiver() as rx:
        result = await client.post(rx.url + "/mail-proxy/sync", b"{}",
                                   {"Authorization": "Bearer pass\u00e9word"}, 2, "acme")
    await client.close()
    assert result.outcome == CONNECTION_ERROR and not result.ok
    assert "UnicodeEncodeError" in result.detail
    assert "pass" not in result.detail and "\u00e9" not in result.detail
    assert rx.calls == []


async def test_entries_sent_are_the_ones_documented(core, smtp_server) -> None:
    """Every field of a real entry is described in docs/reports.md, including a 451 on
    RCPT (reported as a deferral with code "throttled") and refused recipients."""
    async with Receiver() as rx:
        await f.tenant(core, "acme", client_base_url=rx.url)
        await f.account(core, smtp_server.port)
        smtp_server.script(rcpt={"bad2@example.com": "550 5.1.1 User unknown",
                                 "rcpt3@example.com": "550 5.1.1 User unknown"})
        await deliver(core, smtp_server.port,
                      f.message(2, to=["rcpt2@example.com", "bad2@example.com"]), f.message(3))
        smtp_server.script(rcpt={"rcpt1@example.com": "451 4.7.1 Try again later"})
        await deliver(core, smtp_server.port, f.message(1))
        rep = reporter(core)
        assert await rep.run_once() == 1
        await rep.stop(1)
    by_id = {e["id"]: e for e in rx.entries}
    deferred, sent, error = by_id["m-1"], by_id["m-2"], by_id["m-3"]
    assert deferred["code"] == "throttled"
    assert deferred["deferred_reason"] == "451 4.7.1 Try again later"
    assert deferred["smtp_code"] == 451 and deferred["next_attempt_ts"] > time.time()
    assert sent["refused_recipients"] == [
        {"address": "bad2@example.com", "smtp_code": 550, "message": "5.1.1 User unknown"}]
    assert error["code"] == "all_recipients_refused"
    assert error["refused_recipients"] == [
        {"address": "rcpt3@example.com", "smtp_code": 550, "message": "5.1.1 User unknown"}]

    docs = DOCS.read_text(encoding="utf-8")
    for entry in (deferred, sent, error):
        for key in entry:
            assert f"`{key}`" in docs, key
    for key in ("address", "smtp_code", "message"):
        assert f"`{key}`" in docs, key
    assert '"code": "throttled"' in docs and "`deferred_reason`" in docs
