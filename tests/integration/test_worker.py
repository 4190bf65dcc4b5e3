"""A whole worker in-process: API in, SMTP out."""

from __future__ import annotations

import asyncio

from tests.support import factories as f
from tests.support.worker import running_worker


async def wait_for(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_api_accepts_and_worker_delivers(tmp_path, keyring, smtp_server) -> None:
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme",
                                    "messages": [f.message(i) for i in range(10)]})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "queued": 10, "rejected": []}

        async def delivered() -> bool:
            return len(smtp_server.messages) == 10

        await wait_for(delivered)
        r = await client.get("/messages", params={"tenant_id": "acme", "status": "sent"})
        assert len(r.json()["messages"]) == 10
        assert (await client.get("/health")).json() == {"ok": True, "status": "ok"}
        status = (await client.get("/status")).json()
        assert status["state"] == "running" and status["active"] is True


async def test_requests_without_token_get_401_json(tmp_path, keyring) -> None:
    async with running_worker(tmp_path, keyring) as (_worker, client):
        r = await client.get("/messages", headers={"X-API-Token": ""})
        assert r.status_code == 401
        assert r.json()["code"] == "missing_token"
        assert r.headers["www-authenticate"] == "Bearer"
        r = await client.get("/messages", headers={"X-API-Token": "nope-" * 8})
        assert r.status_code == 401 and r.json()["code"] == "invalid_token"
        r = await client.get("/nowhere")
        assert r.status_code == 404 and r.json()["ok"] is False
        assert "x-request-id" in r.headers


async def test_partial_rejection_and_all_rejected(tmp_path, keyring, smtp_server) -> None:
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        bad = f.message(2, to=["ann@"])
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [f.message(1), bad]})
        body = r.json()
        assert r.status_code == 200 and body["queued"] == 1
        assert body["rejected"][0]["index"] == 1
        assert body["rejected"][0]["code"] == "invalid_address"
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [bad]})
        assert r.status_code == 400
        assert r.json()["code"] == "all_rejected" and r.json()["queued"] == 0


async def test_add_messages_is_recorded_once_in_the_command_log(tmp_path, keyring,
                                                               smtp_server) -> None:
    from mail_proxy.manager import command_log

    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        ok = await client.post("/commands/add-messages",
                               json={"tenant_id": "acme", "messages": [f.message(1)]})
        bad = await client.post("/commands/add-messages",
                                json={"tenant_id": "acme", "messages": [{"id": "x"}]})
        assert (ok.status_code, bad.status_code) == (200, 400)
        rows = (await command_log.list_commands(worker.core,
                                                endpoint="add-messages"))["commands"]
        assert [(r["response_status"], r["actor"], r["tenant_id"]) for r in rows] == [
            (200, "admin", "acme"), (400, "admin", "acme")]
        assert rows[0]["response_body"] == {"ok": True, "queued": 1, "rejected": []}
        assert rows[0]["payload"]["messages"][0]["id"] == "m-1"


async def test_metrics_show_deliveries_connections_and_queue(tmp_path, keyring,
                                                             smtp_server) -> None:
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme",
                                    "messages": [f.message(i) for i in range(3)]})
        assert r.status_code == 200

        async def delivered() -> bool:
            return len(smtp_server.messages) == 3

        await wait_for(delivered)
        await asyncio.sleep(0.2)  # the outcome commits run just after the SMTP replies
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = r.text
        assert 'gmp_sent_total{account_id="main",tenant_id="acme"} 3.0' in text
        assert 'gmp_enqueued_total{tenant_id="acme"} 3.0' in text
        assert 'gmp_smtp_connections{account_id="main",state="idle",tenant_id="acme"}' in text
        assert 'gmp_messages{status="sent"}' in text
        assert "_created" not in text
        tenant_key = (await client.get("/metrics", headers={"X-API-Token": "x" * 43}))
        assert tenant_key.status_code == 401


async def test_a_drain_that_fails_still_closes_the_database(tmp_path, keyring, caplog) -> None:
    """The database gone at SIGTERM: the store's threads are not daemons, so a skipped
    close would keep the process alive after its loop ended."""
    import threading

    from mail_proxy.server import Worker
    from mail_proxy.store.errors import StoreUnavailable
    from tests.support.worker import process_config

    def store_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate()
                if "_connection_worker_thread" in t.name and t.is_alive()}

    before = store_threads()
    worker = Worker(process_config(tmp_path), keyring)
    await worker.start()
    assert store_threads() - before

    async def drain(_timeout: float) -> None:
        raise StoreUnavailable("database error: disk I/O error")

    worker.dispatcher.drain = drain  # type: ignore[method-assign]
    await worker.stop()
    await asyncio.sleep(0.1)
    assert not store_threads() - before
    assert "while stopping: database error: disk I/O error" in caplog.text


async def test_a_new_message_id_domain_is_announced_by_new_connections(
        tmp_path, keyring, smtp_server) -> None:
    """delivery.md §8.4: EHLO names the Message-ID domain; a PATCH applies it at once."""
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.patch("/instance", json={"message_id_domain": "mid.example.org"})
        assert r.status_code == 200, r.text
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [f.message(1)]})
        assert r.status_code == 200, r.text

        async def delivered() -> bool:
            return len(smtp_server.messages) == 1

        await wait_for(delivered)
        assert smtp_server.ehlo_names == ["mid.example.org"]
        assert b"@mid.example.org>" in smtp_server.messages[0].data


async def test_bounce_return_path_is_the_envelope_sender_and_unbuilt_features_warn(
        tmp_path, keyring, smtp_server, caplog) -> None:
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.patch("/instance", json={
            "bounce_return_path": "bounces@acme.test", "bounce_enabled": True,
            "bounce_imap_host": "imap.acme.test"})
        assert r.status_code == 200, r.text
        assert "not implemented in this version, so without effect: bounce_enabled" \
            in caplog.text
        r = await client.post("/commands/add-messages", json={"tenant_id": "acme", "messages": [
            f.message(1), f.message(2, return_path="own@acme.test")]})
        assert r.status_code == 200, r.text

        async def delivered() -> bool:
            return len(smtp_server.messages) == 2

        await wait_for(delivered)
        senders = {m.data.split(b"X-Mail-Proxy-ID: ")[1][:3]: m.mail_from
                   for m in smtp_server.messages}
        assert senders == {b"m-1": "bounces@acme.test", b"m-2": "own@acme.test"}


async def test_sighup_rereads_settings_even_without_a_new_version(tmp_path, keyring) -> None:
    """settings.md §1: SIGHUP forces a reload (a restored or hand-edited row keeps its
    version, which the 5 s poll compares)."""
    import sqlite3

    async with running_worker(tmp_path, keyring) as (worker, _client):
        assert worker.core.settings.max_recipients == 500

        def restore() -> None:  # in a thread: the worker's writer needs this event loop
            db = sqlite3.connect(tmp_path / "mail_service.db", timeout=10)
            with db:
                db.execute("UPDATE instance SET settings = ?", ('{"max_recipients": 1}',))
            db.close()

        await asyncio.to_thread(restore)
        worker.reload()  # what the SIGHUP handler runs
        for _ in range(50):
            if worker.core.settings.max_recipients == 1:
                break
            await asyncio.sleep(0.02)
        assert worker.core.settings.max_recipients == 1


async def test_an_account_changed_or_deleted_through_the_api_closes_its_idle_connections(
        tmp_path, keyring, smtp_server) -> None:
    """delivery.md §8.1: the old pool closes its idle connections at once. With nothing
    left to send, they stayed open until the idle timeout, 60-75 s (soak hunt)."""
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [f.message(1)]})
        assert r.status_code == 200, r.text

        async def idle() -> int:
            return sum(s["idle"] for s in worker.smtp.stats().values())

        async def one_idle() -> bool:
            return await idle() == 1

        async def none_idle() -> bool:
            return await idle() == 0

        await wait_for(one_idle)
        r = await client.patch("/account/main", params={"tenant_id": "acme"},
                               json={"max_connections": 2})
        assert r.status_code == 200, r.text
        await wait_for(none_idle, timeout=3)
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [f.message(2)]})
        await wait_for(one_idle)
        assert ('gmp_smtp_connections{account_id="main",state="idle",tenant_id="acme"} 1.0'
                in (await client.get("/metrics")).text)
        r = await client.delete("/account/main", params={"tenant_id": "acme"})
        assert r.status_code == 200, r.text
        await wait_for(none_idle, timeout=3)
        # the gauge follows the pool that went (metrics hunt: it froze at "idle 1")
        text = (await client.get("/metrics")).text
        assert ('gmp_smtp_connections{account_id="main",state="idle",tenant_id="acme"} 0.0'
                in text), [x for x in text.splitlines() if "smtp_connections" in x]



async def test_a_reload_keeps_the_key_ring_when_the_new_one_lacks_a_key_in_use(
        tmp_path, keyring) -> None:
    """Start refuses a ring without a key the database uses; SIGHUP took one, and every
    send needing one of those secrets failed (attachment hunt)."""
    from mail_proxy.security.crypto import KeyRing, generate_key

    async with running_worker(tmp_path, keyring) as (worker, _client):
        await f.tenant(worker.core, client_base_url="http://127.0.0.1:9/base",
                       client_auth={"method": "bearer", "token": "t0ken"})
        stranger = KeyRing([generate_key()], source="env")
        assert not await worker.adopt_key_ring("other-token", stranger)
        assert worker.core.keyring is keyring and worker.api.admin_token != "other-token"
        wider = KeyRing([generate_key(), *keyring.keys()], source="env")
        assert await worker.adopt_key_ring(worker.api.admin_token, wider)
        assert worker.core.keyring is wider
        # a ring that lacks a key the running one lacks as well is no loss: taken
        worker.core.keyring = worker.keyring = stranger
        another = KeyRing([generate_key()], source="env")
        assert await worker.adopt_key_ring(worker.api.admin_token, another)
        assert worker.core.keyring is another


async def test_only_endpoint_attachments_need_the_tenant_client_auth(
        tmp_path, keyring, smtp_server) -> None:
    """Attachment hunt: with the tenant's client_auth unreadable, a message whose only
    attachment was base64 ended in internal_error (with a traceback); an endpoint one
    should be the transient secret_unavailable of delivery.md §4."""
    import sqlite3

    from mail_proxy.security.crypto import KeyRing, generate_key

    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core, client_base_url="http://127.0.0.1:9/base")
        await f.account(worker.core, smtp_server.port)
        lost = KeyRing([generate_key()], source="env").encrypt_json(
            {"method": "bearer", "token": "t0ken"})

        def overwrite() -> None:
            # in a thread: the worker shares this event loop, and a transaction of its
            # writer may be waiting for the loop while holding the write lock
            db = sqlite3.connect(tmp_path / "mail_service.db", timeout=10)
            with db:
                db.execute("UPDATE tenants SET client_auth = ? WHERE id = 'acme'", (lost,))
            db.close()

        await asyncio.to_thread(overwrite)
        r = await client.post("/commands/add-messages", json={"tenant_id": "acme", "messages": [
            f.message(1, attachments=[{"filename": "a.txt", "storage_path": "base64:aGVsbG8="}]),
            f.message(2, attachments=[{"filename": "b.pdf", "storage_path": "doc-7",
                                       "fetch_mode": "endpoint"}])]})
        assert r.status_code == 200, r.text

        async def settled() -> bool:
            rows = await worker.core.store.fetch(
                "message_list", tenant_id="acme", status=None, batch_code=None,
                before_pk=None, limit=10)
            return {row["id"]: row["status"] for row in rows}.get("m-2") == "deferred" \
                and len(smtp_server.messages) == 1

        await wait_for(settled)
        rows = await worker.core.store.fetch("message_list", tenant_id="acme", status=None,
                                             batch_code=None, before_pk=None, limit=10)
        by_id = {row["id"]: row for row in rows}
        assert by_id["m-1"]["status"] == "sent"
        assert by_id["m-2"]["last_error_code"] == "secret_unavailable"
        assert "client_auth cannot be decrypted" in by_id["m-2"]["last_error"]


async def test_a_settings_change_reaches_a_sleeping_dispatcher_at_once(
        tmp_path, keyring, smtp_server) -> None:
    """settings.md §1, scheduling hunt: dispatch re-enabled with a 30 s send_loop_interval
    in force sent its message at the end of that sleep, 28.5 s later."""
    async with running_worker(tmp_path, keyring) as (worker, client):
        await f.tenant(worker.core)
        await f.account(worker.core, smtp_server.port)
        r = await client.patch("/instance", json={"dispatch_enabled": False,
                                                  "send_loop_interval": 30})
        assert r.status_code == 200, r.text
        r = await client.post("/commands/add-messages",
                              json={"tenant_id": "acme", "messages": [f.message(1)]})
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.3)  # the dispatcher is asleep for 30 s now
        assert smtp_server.messages == []
        r = await client.patch("/instance", json={"dispatch_enabled": True,
                                                  "send_loop_interval": 0.5})
        assert r.status_code == 200, r.text

        async def delivered() -> bool:
            return len(smtp_server.messages) == 1

        await wait_for(delivered, timeout=5)
