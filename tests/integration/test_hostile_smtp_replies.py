"""SMTP servers that send replies nobody asked for, or replies that are not SMTP
(delivery.md §4, §8): the pool must drop such a session and fail the message in flight as
transient, never pair a spare reply with the next command (QA hunt, delivery findings 1, 9).

``HostileServer`` is a raw asyncio SMTP responder: it answers each command as it reads it
(with or without offering PIPELINING) and can add replies where none is due.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from mail_proxy.delivery.smtp import SmtpPools, SmtpTarget
from mail_proxy.errors import DeliveryFailure, PermanentFailure, TransientFailure
from tests.integration.test_engine_audit_helpers import deliver, message
from tests.support import factories as f

pytestmark = pytest.mark.timeout(20)
HOST = "127.0.0.1"


@dataclass
class HostileServer:
    pipelining: bool = True
    greeting: bytes = b"220 hostile.test ESMTP\r\n"
    data: bytes = b"354 go ahead\r\n"
    final: bytes = b"250 2.0.0 ok queued\r\n"
    after_final: bytes = b""  # written with the final reply, answering nothing
    before_next: bytes = b""  # written just before the reply to the command after a message
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def __aenter__(self) -> HostileServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Hostile(self), HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    def received(self, marker: bytes) -> int:
        return sum(marker in body for body in self.bodies)


class _Hostile(asyncio.Protocol):
    def __init__(self, owner: HostileServer) -> None:
        self.owner = owner
        self.buf = b""
        self.in_data = False
        self.owed = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections += 1
        transport.write(self.owner.greeting)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.transport.is_closing():
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.owner.bodies.append(self.buf[2:end + 2])
                self.buf = self.buf[end + 5:]
                self.in_data = False
                self.transport.write(self.owner.final + self.owner.after_final)
                self.owed = self.owner.before_next
                continue
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                return
            self.buf = rest
            self._command(line.split(b" ")[0].upper())

    def _command(self, verb: bytes) -> None:
        reply = b"250 2.1.5 ok\r\n"
        if verb == b"EHLO":
            reply = b"250-hostile.test\r\n" + (
                b"250-PIPELINING\r\n" if self.owner.pipelining else b"") + b"250 8BITMIME\r\n"
        elif verb == b"DATA":
            reply = self.owner.data
            self.in_data = reply.startswith(b"354")
            self.buf = b"\r\n" + self.buf  # so an empty body also ends on CRLF.CRLF
        elif verb == b"QUIT":
            self.transport.write(b"221 bye\r\n")
            self.transport.close()
            return
        self.transport.write(self.owed + reply)
        self.owed = b""


@pytest.fixture(params=[True, False], ids=["pipelined", "one-by-one"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def target(port: int, max_connections: int = 1) -> SmtpTarget:
    return SmtpTarget(tenant_id="acme", account_id="main", host=HOST, port=port,
                      tls_mode="none", max_connections=max_connections)


def body(n: int) -> bytes:
    return f"Subject: {n}\r\nX-Test-Id: msg-{n}\r\n\r\nbody {n}\r\n".encode()


async def send_until_sent(pools: SmtpPools, t: SmtpTarget, n: int) -> list[DeliveryFailure]:
    """Send message n as the dispatcher would retry it: transient failures are retried,
    a permanent one is a test failure. Returns the transient failures met on the way."""
    failures: list[DeliveryFailure] = []
    for _ in range(4):
        try:
            await pools.send(t, "s@acme.test", [f"r{n}@x.test"], body(n))
        except PermanentFailure as exc:
            raise AssertionError(f"message {n} failed permanently: {exc.code} {exc}") from exc
        except TransientFailure as exc:
            failures.append(exc)
            continue
        return failures
    raise AssertionError(f"message {n} never sent: {failures}")


def marker(n: int) -> bytes:
    return f"X-Test-Id: msg-{n}\r\n".encode()


async def test_spare_reply_after_the_final_reply_is_never_paired_with_a_command(
        pools: SmtpPools, pipelining: bool) -> None:
    """The hunt's `double_final`: every message after the first on a connection failed as
    `smtp_permanent` "250 2.1.5 ok" and was never sent. The spare reply arrives while no
    command waits: the session is dropped at once, so every message goes out on a fresh
    connection, each exactly once."""
    async with HostileServer(pipelining=pipelining,
                             after_final=b"250 2.0.0 extra\r\n") as srv:
        t = target(srv.port)
        for n in range(4):
            assert await send_until_sent(pools, t, n) == []
        assert [srv.received(marker(n)) for n in range(4)] == [1, 1, 1, 1]
        assert srv.connections == 4  # a session that misbehaved is never reused


async def test_spare_reply_before_the_next_reply_fails_that_message_transiently(
        pools: SmtpPools, pipelining: bool) -> None:
    """The spare reply comes just ahead of the next command's reply, so replies shift by one
    (MAIL gets the spare, RCPT gets MAIL's, DATA gets RCPT's 250). A 250 where 354 was
    expected is a protocol error: transient, the session dropped, the message not sent."""
    async with HostileServer(pipelining=pipelining,
                             before_next=b"250 2.0.0 extra\r\n") as srv:
        t = target(srv.port)
        assert await send_until_sent(pools, t, 0) == []
        with pytest.raises(TransientFailure) as info:
            await pools.send(t, "s@acme.test", ["r1@x.test"], body(1))
        failure = info.value
        assert failure.code == "connection_failed" and failure.smtp_code is None
        assert failure.message.startswith(f"bad reply from {HOST}:{srv.port} during ")
        assert srv.received(marker(1)) == 0
        assert await send_until_sent(pools, t, 1) == []  # the retry, on a new connection
        assert srv.received(marker(1)) == 1
        assert srv.connections == 2


async def test_concurrent_messages_behind_spare_replies_are_all_sent_once(
        pools: SmtpPools, pipelining: bool) -> None:
    """With PIPELINING the next envelope may already be on the wire when the spare reply
    arrives; whichever message it hits fails transiently and its retry goes out."""
    async with HostileServer(pipelining=pipelining,
                             after_final=b"250 2.0.0 extra\r\n") as srv:
        t = target(srv.port, max_connections=2)
        await asyncio.gather(*(send_until_sent(pools, t, n) for n in range(8)))
        assert [srv.received(marker(n)) for n in range(8)] == [1] * 8


async def test_two_thousand_reply_to_data_is_a_protocol_error(
        pools: SmtpPools, pipelining: bool) -> None:
    """DATA answered 250: never `smtp_permanent` for a 2xx; the body is not sent and the
    session is dropped (the server's idea of the transaction is unknown)."""
    async with HostileServer(pipelining=pipelining, data=b"250 2.0.0 ok\r\n") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["r@x.test"], body(0))
        assert info.value.code == "connection_failed"
        assert "250 2.0.0 ok" in info.value.message
        assert srv.bodies == []
        assert pools.stats()[("acme", "main")] == {"idle": 0, "busy": 0}


async def test_spare_reply_with_the_354_stops_the_message(pools: SmtpPools,
                                                          pipelining: bool) -> None:
    """'354' and a spare '250' in one write: the 250 must not be taken as the message's
    final reply (the message would count as sent before its body left)."""
    async with HostileServer(pipelining=pipelining,
                             data=b"354 go ahead\r\n250 2.0.0 bogus\r\n") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["r@x.test"], body(0))
        assert info.value.code == "connection_failed"
        assert "250 2.0.0 bogus" in info.value.message
        assert srv.bodies == []


async def test_malformed_final_reply_keeps_its_reason(pools: SmtpPools,
                                                      pipelining: bool) -> None:
    async with HostileServer(pipelining=pipelining, final=b"hello world\r\n") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["r@x.test"], body(0))
    assert info.value.code == "connection_failed"
    assert info.value.message == (f"bad reply from {HOST}:{srv.port} during data: "
                                  "malformed SMTP reply: 'hello world\\r\\n'")


async def test_a_four_digit_code_is_not_a_reply(pools: SmtpPools, pipelining: bool) -> None:
    """Delivery hunt: "2500 ok" was read as 250 and the message counted as sent."""
    async with HostileServer(pipelining=pipelining, final=b"2500 ok\r\n") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["r@x.test"], body(0))
    assert "malformed SMTP reply: '2500 ok\\r\\n'" in info.value.message


async def test_endless_greeting_keeps_its_reason(pools: SmtpPools) -> None:
    greeting = b"".join(b"220-" + b"x" * 900 + b"\r\n" for _ in range(200)) + b"220 ok\r\n"
    async with HostileServer(greeting=greeting) as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["r@x.test"], body(0))
    assert info.value.code == "connection_failed"
    assert info.value.message == (f"bad reply from {HOST}:{srv.port} during greeting: "
                                  "Response too long")


async def test_no_message_ends_in_error_behind_a_spare_reply(core) -> None:
    """End to end: the dispatcher records the shifted message as a transient failure
    (deferred for a retry) or sends it; no message is lost as `error`."""
    async with HostileServer(pipelining=False, before_next=b"250 2.0.0 extra\r\n") as srv:
        await f.tenant(core)
        await f.account(core, srv.port, max_connections=1)
        await f.enqueue(core, *(f.message(n) for n in range(1, 5)))
        await deliver(core, connect_timeout=2, send_timeout=2)
    records = [await message(core, f"m-{n}") for n in range(1, 5)]
    statuses = sorted(r["status"] for r in records)
    assert "error" not in statuses, [(r["status"], r["last_error"]) for r in records]
    for r in records:
        if r["status"] == "deferred":
            assert r["last_error_code"] == "connection_failed" and r["attempts"] == 1
    assert statuses.count("sent") == len(srv.bodies) >= 1
