"""Connection pool behaviour (delivery.md §8.1-8.2, 8.5) against a real aiosmtpd server."""

from __future__ import annotations

import asyncio

import pytest

from mail_proxy.delivery.smtp import NotResent, SmtpPools, SmtpTarget
from mail_proxy.errors import TransientFailure
from tests.support.smtp_server import RecordingSmtpServer, SinkServer

pytestmark = pytest.mark.timeout(10)

DATA = b"Subject: pool\r\n\r\nhello\r\n"


class Clock:
    """Monotonic clock the test moves by hand, so lifetimes need no real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def target(port: int, **kw: object) -> SmtpTarget:
    args: dict[str, object] = {"tenant_id": "acme", "account_id": "main", "host": "127.0.0.1",
                               "port": port, "user": None, "password": None, "tls_mode": "none"}
    args.update(kw)
    return SmtpTarget(**args)  # type: ignore[arg-type]


async def settle(srv: RecordingSmtpServer, open_connections: int) -> None:
    """Background QUITs finish asynchronously: wait (bounded) for the server to see them."""
    for _ in range(100):
        if srv.open_connections == open_connections:
            return
        await asyncio.sleep(0.01)
    assert srv.open_connections == open_connections


async def test_sequential_sends_reuse_one_connection() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        for i in range(5):
            await pools.send(target(srv.port), "s@acme.test", [f"r{i}@example.test"], DATA)
        assert srv.connections == 1
        assert len(srv.messages) == 5
        assert pools.stats() == {("acme", "main"): {"idle": 1, "busy": 0}}
        await pools.close()
    assert srv.commands["EHLO"] == 1


async def test_max_connections_respected_under_concurrency() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        srv.script(data_delay=0.05)
        t = target(srv.port, max_connections=2)
        peak_busy = 0

        async def one(i: int) -> None:
            nonlocal peak_busy
            await pools.send(t, "s@acme.test", [f"r{i}@example.test"], DATA)
            peak_busy = max(peak_busy, pools.stats()[("acme", "main")]["busy"])

        await asyncio.gather(*(one(i) for i in range(10)))
        assert len(srv.messages) == 10
        assert srv.connections == 2
        assert srv.peak_connections == 2
        assert peak_busy <= 2
        await pools.close()


async def test_most_recently_used_idle_connection_is_taken_first() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        srv.script(data_delay=0.02)
        t = target(srv.port, max_connections=2)
        await asyncio.gather(*(pools.send(t, "s@acme.test", ["a@example.test"], DATA)
                               for _ in range(2)))
        srv.script(data_delay=0.0)
        for _ in range(4):
            await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        # LIFO: one connection stays warm, the other ages towards the idle timeout.
        assert len({m.connection for m in srv.messages[2:]}) == 1
        await pools.close()


async def test_waiters_are_served_in_fifo_order() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        srv.script(data_delay=0.02)
        t = target(srv.port, max_connections=1)
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(
                pools.send(t, "s@acme.test", [f"r{i}@example.test"], DATA)))
            await asyncio.sleep(0)  # fix the arrival order
        await asyncio.gather(*tasks)
        assert [m.rcpt_tos[0] for m in srv.messages] == [f"r{i}@example.test" for i in range(6)]
        await pools.close()


async def test_connection_past_lifetime_is_replaced() -> None:
    clock = Clock()
    pools = SmtpPools(ehlo_name="proxy.test", clock=clock, health_check_after=10_000)
    async with RecordingSmtpServer() as srv:
        t = target(srv.port, max_lifetime=300)
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        clock.now += 299
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        assert srv.connections == 1
        clock.now += 2  # now 301 s old
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        assert srv.connections == 2
        await settle(srv, 1)
        assert srv.commands["QUIT"] == 1
        await pools.close()


async def test_health_check_only_after_idle_period() -> None:
    clock = Clock()
    pools = SmtpPools(ehlo_name="proxy.test", clock=clock, health_check_after=30)
    async with RecordingSmtpServer() as srv:
        t = target(srv.port)
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        clock.now += 10
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        assert srv.commands["NOOP"] == 0
        clock.now += 31
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        assert srv.commands["NOOP"] == 1
        assert srv.connections == 1

        srv.script(noop="421 4.4.2 Idle too long")  # the check fails: open a new one
        clock.now += 31
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        assert srv.connections == 2
        assert len(srv.messages) == 4
        await pools.close()


async def test_reap_idle_closes_stale_connections() -> None:
    clock = Clock()
    pools = SmtpPools(ehlo_name="proxy.test", clock=clock, idle_timeout=60)
    async with RecordingSmtpServer() as srv:
        t = target(srv.port)
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        clock.now += 59
        await pools.reap_idle()
        assert pools.stats()[("acme", "main")]["idle"] == 1
        clock.now += 2
        await pools.reap_idle()
        assert pools.stats()[("acme", "main")]["idle"] == 0
        assert srv.commands["QUIT"] == 1
        await settle(srv, 0)
        await pools.close()


async def test_close_quits_idle_connections_and_refuses_new_sends() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        t = target(srv.port, max_connections=3)
        await asyncio.gather(*(pools.send(t, "s@acme.test", ["a@example.test"], DATA)
                               for _ in range(3)))
        assert srv.open_connections == 3
        await pools.close()
        assert srv.commands["QUIT"] == 3
        await settle(srv, 0)
        with pytest.raises(TransientFailure):
            await pools.send(t, "s@acme.test", ["a@example.test"], DATA)


async def test_changed_account_settings_start_a_new_pool() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer(user="u", password="old") as srv:
        await pools.send(target(srv.port, user="u", password="old"), "s@acme.test",
                         ["a@example.test"], DATA)
        srv.password = "new"
        await pools.send(target(srv.port, user="u", password="new"), "s@acme.test",
                         ["a@example.test"], DATA)
        assert srv.connections == 2
        await settle(srv, 1)  # the old pool's idle connection was closed at once
        assert pools.stats() == {("acme", "main"): {"idle": 1, "busy": 0}}
        await pools.discard("acme", "main")
        await settle(srv, 0)
        assert pools.stats() == {}
        await pools.close()


async def test_throttled_account_shrinks_to_one_connection() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        srv.script(data_delay=0.02)
        t3 = target(srv.port, max_connections=3)
        await asyncio.gather(*(pools.send(t3, "s@acme.test", ["a@example.test"], DATA)
                               for _ in range(3)))
        assert pools.stats()[("acme", "main")]["idle"] == 3
        t1 = target(srv.port, max_connections=1)  # same pool key, smaller size
        await asyncio.gather(*(pools.send(t1, "s@acme.test", ["a@example.test"], DATA)
                               for _ in range(3)))
        assert pools.stats()[("acme", "main")]["idle"] <= 1
        await pools.close()


async def cancel_in(srv: RecordingSmtpServer, pools: SmtpPools, command: str,
                    task: asyncio.Task[object]) -> None:
    """Cancel ``task`` once the server has seen ``command`` (and sits on it, scripted to
    hang); the account's one slot must then be free."""
    for _ in range(200):
        if srv.commands[command]:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pools.stats()[("acme", "main")] == {"idle": 0, "busy": 0}


async def test_cancelled_send_frees_its_slot() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with RecordingSmtpServer() as srv:
        srv.script(hang="data")
        t = target(srv.port, max_connections=1)
        task = asyncio.create_task(pools.send(t, "s@acme.test", ["a@example.test"], DATA))
        await cancel_in(srv, pools, "DATA", task)
        srv.reset_script()
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        await pools.close()


async def test_send_cancelled_during_the_health_check_frees_its_slot() -> None:
    clock = Clock()
    pools = SmtpPools(ehlo_name="proxy.test", clock=clock, health_check_after=30)
    async with RecordingSmtpServer() as srv:
        t = target(srv.port, max_connections=1)
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)
        srv.script(hang="noop")
        clock.now += 31
        task = asyncio.create_task(pools.send(t, "s@acme.test", ["a@example.test"], DATA))
        await cancel_in(srv, pools, "NOOP", task)  # the idle connection's health check
        srv.reset_script()
        await pools.send(t, "s@acme.test", ["a@example.test"], DATA)  # on a new connection
        assert srv.connections == 2 and len(srv.messages) == 2
        await pools.close()


async def test_password_is_masked_in_repr() -> None:
    t = target(25, user="mailer", password="hunter2")
    assert "hunter2" not in repr(t)
    assert "hunter2" not in str(t)
    assert "'***'" in repr(t)


async def test_sink_server_counts_pipelined_sends() -> None:
    pools = SmtpPools(ehlo_name="proxy.test")
    async with SinkServer() as sink:
        t = target(sink.port, max_connections=3)
        await asyncio.gather(*(pools.send(t, "s@acme.test", ["a@example.test"], DATA)
                               for _ in range(60)))
        assert sink.messages == 60
        assert sink.connections == 3
        await pools.close()


class OneMessagePerSession:
    """Answers PIPELINING, takes one message per session and hangs up after its 250 (a
    per-session message limit)."""

    def __init__(self, *finals: bytes) -> None:
        self.received: list[bytes] = []
        self.sessions = 0
        self.finals = list(finals)  # the first messages' final replies, then 250

    async def __aenter__(self) -> OneMessagePerSession:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        writer.write(b"220 once.test ESMTP\r\n")
        body: list[bytes] | None = None
        while line := await reader.readline():
            if body is not None:
                if line != b".\r\n":
                    body.append(line)
                    continue
                self.received.append(b"".join(body))
                final = self.finals.pop(0) if self.finals else b"250 2.0.0 queued"
                writer.write(final + b"\r\n")
                await writer.drain()
                break  # the limit: one message, then the session ends without QUIT
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-once.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                body = []
            else:
                writer.write(b"250 ok\r\n")
        writer.close()


async def test_a_server_hanging_up_after_its_250_costs_the_next_message_nothing() -> None:
    """The envelope pipelined behind the last message of a session met a closed connection:
    it goes once more on a new connection instead of failing with an attempt counted."""
    async with OneMessagePerSession() as srv:
        pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=2)
        t = target(srv.port, max_connections=1)
        try:
            # each next envelope is written as soon as the previous message is
            results = await asyncio.gather(*(
                pools.send(t, "a@acme.test", [f"r{i}@example.com"],
                           b"Subject: %d\r\n\r\nhi\r\n" % i) for i in range(4)))
            assert [r.accepted for r in results] == [[f"r{i}@example.com"] for i in range(4)]
        finally:
            await pools.close()
    assert len(srv.received) == 4 and srv.sessions == 4


async def test_a_message_lost_behind_a_throttle_and_hang_up_is_not_resent_when_told_not_to(
        ) -> None:
    """Delivery hunt: "421 closing, slow down" at the end of one message, and the envelope
    pipelined behind it went again at once on a new connection, inside the pause."""
    async with OneMessagePerSession(b"421 4.7.0 closing, slow down") as srv:
        pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=2)
        t = target(srv.port, max_connections=1)
        try:
            first, second = await asyncio.gather(*(
                pools.send(t, "a@acme.test", [f"r{i}@example.com"],
                           b"Subject: %d\r\n\r\nhi\r\n" % i, may_resend=lambda: False)
                for i in range(2)), return_exceptions=True)
        finally:
            await pools.close()
    assert isinstance(first, TransientFailure) and first.throttle, first
    assert isinstance(second, NotResent), second
    assert len(srv.received) == 1 and srv.sessions == 1
