"""A tenant's report URL set or removed while its configuration is cached by the dispatcher
(up to 5 s): the outcomes written next follow the URL as it is now (reports.md §6).

Found by an operations hunt: with the URL removed, outcomes kept events waiting for a
report that could never be sent (the message never settled, never purged, and the pending
gauge never drained); with the URL set, outcomes were stored unreportable and the client
never heard of them. Runs on SQLite and PostgreSQL through the ``core`` fixture.
"""

from __future__ import annotations

from mail_proxy.delivery.dispatcher import Dispatcher
from mail_proxy.delivery.smtp import SmtpPools
from mail_proxy.manager import tenants
from mail_proxy.manager.core import ADMIN
from tests.support import factories as f
from tests.support.dispatching import drive


async def _send_one(core, d: Dispatcher, message_id: str) -> dict:
    await f.enqueue(core, f.message(message_id))
    await drive(d)
    msg = await core.store.fetch_one("message_get", tenant_id="acme", id=f"m-{message_id}")
    assert msg is not None and msg["status"] == "sent"
    return {"settled": msg["settled_at"] is not None,
            "pending": await core.store.fetch("report_pending_counts")}


async def test_a_url_removed_a_moment_ago_settles_the_next_outcomes(core, smtp_server) -> None:
    await f.tenant(core, client_base_url="https://app.acme.test")
    await f.account(core, smtp_server.port)
    d = Dispatcher(core, owner="w:1:aa", smtp=SmtpPools(ehlo_name="test.local"))
    try:
        first = await _send_one(core, d, "before")  # caches the configuration, with its URL
        assert not first["settled"] and first["pending"] == [{"tenant_id": "acme", "n": 1}]
        await tenants.patch_tenant(core, "acme", {"client_base_url": None}, ADMIN)
        after = await _send_one(core, d, "after")  # within the cache's 5 s
        assert after["settled"], "a message of a tenant without URL must settle"
        assert after["pending"] == [], "nothing can be reported to a tenant without URL"
    finally:
        await d.smtp.close()


async def test_a_url_set_a_moment_ago_reports_the_next_outcomes(core, smtp_server) -> None:
    await f.tenant(core)
    await f.account(core, smtp_server.port)
    d = Dispatcher(core, owner="w:1:aa", smtp=SmtpPools(ehlo_name="test.local"))
    try:
        first = await _send_one(core, d, "before")  # caches the configuration, no URL
        assert first["settled"] and first["pending"] == []
        await tenants.patch_tenant(core, "acme", {"client_base_url": "https://app.acme.test"},
                                   ADMIN)
        after = await _send_one(core, d, "after")
        assert not after["settled"], "the client must hear of it before it settles"
        assert after["pending"] == [{"tenant_id": "acme", "n": 1}]
    finally:
        await d.smtp.close()


async def test_a_new_endpoint_is_called_without_the_old_backoff(core) -> None:
    """Reports hunt: the backoff built against the old URL (up to report_backoff_max, 300 s)
    kept the new one uncalled; the do-not-disturb the old endpoint asked for too."""
    await f.tenant(core, client_base_url="https://old.acme.test")
    async with core.store.transaction() as tx:
        await tx.execute("report_failed", tenant_id="acme", failures=6,
                         backoff_until=4_000_000_000)
    row = await core.store.fetch_one("tenant_get", id="acme")
    assert row["report_failures"] == 6
    await tenants.patch_tenant(core, "acme", {"name": "Acme"}, ADMIN)  # not the endpoint
    assert (await core.store.fetch_one("tenant_get", id="acme"))["report_failures"] == 6
    await tenants.patch_tenant(core, "acme", {"client_base_url": "https://new.acme.test"},
                               ADMIN)
    row = await core.store.fetch_one("tenant_get", id="acme")
    assert (row["report_failures"], row["report_backoff_until"]) == (0, None)
