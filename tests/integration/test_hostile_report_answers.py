"""A tenant whose 2xx answer cannot be decoded still acknowledges the call (reports.md §4:
"2xx acknowledges the call ... even when the body is not JSON"; QA hunt, delivery finding 6).

Before, a 200 whose body said `Content-Encoding: gzip` but was not gzip became a failed
call: the events were never acknowledged, the messages never settled, and the tenant was
called again and again on the backoff schedule.
"""

from __future__ import annotations

import logging

import pytest

from mail_proxy.reports.client import OK, ReportClient
from mail_proxy.reports.reporter import Reporter
from tests.integration.test_reports import events, tenant_row
from tests.support import factories as f
from tests.support.raw_http import Canned, RawHttpServer
from tests.support.receiver import configure, deliver

pytestmark = pytest.mark.timeout(20)

BROKEN = Canned(headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                body=b"not gzip")


async def test_two_hundred_with_an_undecodable_body_is_acknowledged(
        caplog: pytest.LogCaptureFixture) -> None:
    client = ReportClient()
    try:
        async with RawHttpServer({"/sync": BROKEN}) as srv:
            with caplog.at_level(logging.WARNING, logger="mail_proxy.reports"):
                result = await client.post(srv.url("/sync"), b'{"delivery_report":[]}',
                                           {"Content-Type": "application/json"}, 5, "acme")
    finally:
        await client.close()
    assert result.outcome == OK and result.status == 200, result.detail
    assert result.answer.error == set() and result.answer.queued == 0
    assert any("acme" in r.getMessage() and "acknowledging" in r.getMessage()
               for r in caplog.records)


async def test_two_hundred_with_a_cut_off_body_is_acknowledged() -> None:
    """Reports hunt: Content-Length 100, 11 bytes, then the connection closed: counted as
    a connection error, and a receiver answering so got the same events for ever."""
    cut = Canned(headers=[("Content-Type", "application/json"), ("Content-Length", "100")],
                 body=b'{"ok": true', content_length=False)
    client = ReportClient()
    try:
        async with RawHttpServer({"/sync": cut}) as srv:
            result = await client.post(srv.url("/sync"), b'{"delivery_report":[]}',
                                       {"Content-Type": "application/json"}, 5, "acme")
    finally:
        await client.close()
    assert result.outcome == OK and result.status == 200, result.detail


async def test_non_2xx_with_an_undecodable_body_is_still_a_failure() -> None:
    client = ReportClient()
    try:
        async with RawHttpServer({"/sync": Canned(status=503, headers=BROKEN.headers,
                                                  body=BROKEN.body)}) as srv:
            result = await client.post(srv.url("/sync"), b"{}", {}, 5, "acme")
    finally:
        await client.close()
    assert result.outcome == "http_error" and result.status == 503


async def test_events_are_acknowledged_and_settled(core, smtp_server) -> None:
    configure(core, report_timeout=2)
    async with RawHttpServer({"/mail-proxy/sync": BROKEN}) as srv:
        await f.tenant(core, client_base_url=srv.url(""))
        await f.account(core, smtp_server.port)
        await deliver(core, smtp_server.port, f.message(1))
        rep = Reporter(core, owner="test:report")
        assert await rep.run_once() == 1
        await rep.stop(1)
    [event] = await events(core)
    assert event["reported_at"] is not None and event["settled_at"] is not None
    state = await tenant_row(core)
    assert state["report_failures"] == 0 and state["last_report_at"] is not None


async def test_a_gzip_answer_is_read_and_a_gzip_bomb_stays_small() -> None:
    """The answer is inflated in bounded steps: a valid gzip answer is read as JSON, and a
    small body that inflates to 200 MiB is dropped at the 1 MiB cap without ever being
    inflated whole (httpx inflated each read at once: tens of MB per read)."""
    import gzip
    import tracemalloc

    answer = b'{"error": ["m1"]}'
    bomb = gzip.compress(b"\0" * (200 << 20), compresslevel=9)
    routes = {"/ok": Canned(headers=[("Content-Encoding", "gzip")], body=gzip.compress(answer)),
              "/bomb": Canned(headers=[("Content-Encoding", "gzip")], body=bomb)}
    client = ReportClient()
    try:
        async with RawHttpServer(routes) as srv:
            good = await client.post(srv.url("/ok"), b"{}", {}, 5, "acme")
            tracemalloc.start()
            try:
                dropped = await client.post(srv.url("/bomb"), b"{}", {}, 20, "acme")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        await client.close()
    assert good.outcome == OK and good.answer.error == {"m1"}
    assert dropped.outcome == OK and dropped.answer.error == set()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while reading the answer"
