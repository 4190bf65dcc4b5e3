"""Metrics a QA pass found missing or mislabelled (metrics.md §4; hunt of 2026-11-25)."""

from __future__ import annotations

import pytest

from mail_proxy.delivery import leases
from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.metrics import Metrics
from tests.integration.test_engine_audit_helpers import OWNER, settle
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)


def dispatcher(core, metrics: Metrics, owner: str = OWNER) -> Dispatcher:
    pools = SmtpPools(ehlo_name="metrics.test", connect_timeout=2, send_timeout=2)
    return Dispatcher(core, owner=owner, smtp=pools, metrics=metrics)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return found or 0.0


async def test_refused_transactions_are_timed_too(core, smtp_server) -> None:
    """gmp_send_seconds is one SMTP transaction, connection acquired to final reply: it
    counted only the accepted ones."""
    metrics = Metrics(version="test", database="sqlite")
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    smtp_server.script(rcpt={"rcpt2@example.com": "550 5.1.1 User unknown"})
    await f.enqueue(core, f.message(1), f.message(2))
    d = dispatcher(core, metrics)
    try:
        await settle(d)
    finally:
        await d.smtp.close()
    acct = {"tenant_id": "acme", "account_id": "main"}
    assert value(metrics, "gmp_sent_total", **acct) == 1
    assert value(metrics, "gmp_errors_total", **acct) == 1
    assert value(metrics, "gmp_send_seconds_count", **acct) == 2


async def test_a_refused_connection_is_not_a_timed_transaction(core) -> None:
    """Metrics hunt: gmp_send_seconds timed the connecting and the greeting too, and
    observed attempts whose connection was refused, where no transaction began."""
    import socket

    metrics = Metrics(version="test", database="sqlite")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        await f.tenant(core)
        await f.account(core, port)
        await f.enqueue(core, f.message(1))
        d = dispatcher(core, metrics)
        try:
            await d.run_once()
            await settle(d)
        finally:
            await d.smtp.close()
    acct = {"tenant_id": "acme", "account_id": "main"}
    assert value(metrics, "gmp_deferred_total", **acct) == 1
    assert value(metrics, "gmp_send_seconds_count", **acct) == 0


async def test_a_lease_lost_with_no_retry_left_counts_as_an_error(core, smtp_server) -> None:
    metrics = Metrics(version="test", database="sqlite")
    core.settings.max_retries = 0
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    dead = dispatcher(core, metrics, owner="dead:1:x")
    assert len(await dead._claim(0)) == 1  # claimed by a worker that then died
    await leases.renew(core.store, "dead:1:x", -10)
    alive = dispatcher(core, metrics)
    try:
        await alive.run_once()
    finally:
        await alive.smtp.close()
        await dead.smtp.close()
    assert value(metrics, "gmp_errors_total", tenant_id="acme", account_id="main") == 1
