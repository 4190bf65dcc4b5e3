"""A report acknowledgement and a tenant update that removes the URL take the same rows
(the tenant, its pending events, their messages): in the same order, or PostgreSQL
deadlocks them (a stress hunt saw the PATCH fail with 503, its URL change lost).

The update holds the tenant row while the acknowledgement starts; then it updates the
events. With the acknowledgement taking events before the tenant, each waited for the other.
"""

from __future__ import annotations

import asyncio

import asyncpg

from mail_proxy.manager.core import Core, now
from mail_proxy.reports import ledger
from mail_proxy.security.crypto import KeyRing
from tests.support import factories as f


async def test_an_acknowledgement_waits_for_a_url_removal_instead_of_deadlocking(
        pg_url: str, keyring: KeyRing) -> None:
    core = await Core.open(pg_url, keyring, name="test")
    try:
        await f.tenant(core, client_base_url="https://app.acme.test")
        await f.account(core, 2525)
        await f.enqueue(core, f.message(1))
        [row] = await core.store.fetch("message_list", tenant_id="acme", status=None,
                                       batch_code=None, before_pk=None, limit=10)
        async with core.store.transaction() as tx:
            await tx.execute("outcome_event_insert", message_pk=row["pk"], tenant_id="acme",
                             event_type="sent", now=now(), description=None, metadata="{}")
        events = await ledger.pending_batch(core.store, "acme", 0, 10)
        assert len(events) == 1

        schema_conn = await asyncpg.connect(pg_url.split("?")[0], server_settings={
            "search_path": pg_url.split("schema=")[1]})
        try:
            update = schema_conn.transaction()
            await update.start()
            await schema_conn.execute(
                "UPDATE tenants SET client_base_url = NULL WHERE id = 'acme'")
            ack = asyncio.create_task(ledger.acknowledge(
                core.store, tenant_id="acme", events=events, refused_ids=set(),
                not_found=set(), max_rejections=3, now=now(), dnd_until=None))
            await asyncio.sleep(0.5)  # the acknowledgement runs as far as it can
            # the update goes on with the tenant's pending events, as _on_url_removed does
            await schema_conn.execute("UPDATE message_events SET reportable = false "
                                      "WHERE tenant_id = 'acme' AND reportable "
                                      "AND reported_at IS NULL")
            await update.commit()
            acknowledged = await asyncio.wait_for(ack, 10)
        finally:
            await schema_conn.close()
        assert acknowledged.acked == 1
    finally:
        await core.close()
