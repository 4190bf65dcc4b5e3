"""Reply deadlines of an SMTP session (``send_timeout``) against raw loopback servers.

A message transaction (its replies and the wait for the write buffer to drain) must end
within the pool's ``send_timeout``; one timer per session keeps that (not a timeout context
per wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from mail_proxy.delivery.smtp import SmtpPools, SmtpTarget
from mail_proxy.errors import DeliveryFailure, TransientFailure

pytestmark = pytest.mark.timeout(20)


class _StopsReading(asyncio.Protocol):
    """Greets, answers EHLO (PIPELINING) and the envelope with 354, then reads no more."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""
        transport.write(b"220 stuck.test ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.transport.write(b"250-stuck.test\r\n250 PIPELINING\r\n")  # type: ignore[attr-defined]
            elif verb in (b"MAIL", b"RCPT"):
                self.transport.write(b"250 ok\r\n")  # type: ignore[attr-defined]
            elif verb == b"DATA":
                self.transport.write(b"354 go on\r\n")  # type: ignore[attr-defined]
                self.transport.pause_reading()  # type: ignore[attr-defined]
                return


@pytest.fixture
async def stuck_port() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(_StopsReading, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _target(port: int) -> SmtpTarget:
    return SmtpTarget(tenant_id="acme", account_id="main", host="127.0.0.1", port=port,
                      user=None, password=None, tls_mode="none")


async def test_a_server_that_stops_reading_times_out_while_draining(stuck_port: int) -> None:
    pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=0.5)
    message = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 40_000  # 40 MB: more
    # than the socket buffers hold, so the write waits for a drain that never comes
    started = time.monotonic()
    with pytest.raises(DeliveryFailure) as caught:
        await pools.send(_target(stuck_port), "s@acme.test", ["a@example.test"], message)
    elapsed = time.monotonic() - started
    assert pools.stats()[("acme", "main")] == {"idle": 0, "busy": 0}  # dropped, not reused
    await pools.close()
    assert isinstance(caught.value, TransientFailure) and caught.value.code == "timeout"
    assert 0.4 < elapsed < 5


class _AnswersJustInTime(asyncio.Protocol):
    """No PIPELINING; answers every command of a transaction after ``delay`` seconds."""

    delay = 0.2  # a test may change it on the class before connecting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""
        self.in_data = False
        transport.write(b"220 slow.test ESMTP\r\n")  # type: ignore[attr-defined]

    def _later(self, reply: bytes) -> None:
        asyncio.get_running_loop().call_later(self.delay, self._write, reply)

    def _write(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n" in self.buf:
            line, self.buf = self.buf.split(b"\r\n", 1)
            if self.in_data:
                if line == b".":
                    self.in_data = False
                    self._later(b"250 queued\r\n")
                continue
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self._write(b"250 slow.test\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self._later(b"354 go on\r\n")
            elif verb == b"QUIT":
                self._write(b"221 bye\r\n")
                self.transport.close()
            else:
                self._later(b"250 ok\r\n")


@pytest.fixture
async def slow_port() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(
        _AnswersJustInTime, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


RECIPIENTS = [f"r{i}@example.test" for i in range(6)]


async def test_send_timeout_bounds_the_whole_transaction_not_each_reply(
        slow_port: int) -> None:
    # Each reply comes 0.2 s after its command, well within 0.6 s, but MAIL, six RCPT and
    # DATA take 1.6 s: the transaction misses its deadline (settings.md: "one message
    # transaction, MAIL FROM to end of data").
    pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=0.6)
    started = time.monotonic()
    with pytest.raises(DeliveryFailure) as caught:
        await pools.send(_target(slow_port), "s@acme.test", RECIPIENTS, b"Subject: x\r\n\r\nhi\r\n")
    elapsed = time.monotonic() - started
    await pools.close()
    assert isinstance(caught.value, TransientFailure) and caught.value.code == "timeout"
    assert 0.5 < elapsed < 1.4


async def test_a_slow_server_within_the_transaction_deadline_delivers(slow_port: int) -> None:
    pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=5)
    result = await pools.send(_target(slow_port), "s@acme.test", RECIPIENTS,
                              b"Subject: x\r\n\r\nhi\r\n")
    await pools.close()
    assert sorted(result.accepted) == sorted(RECIPIENTS)


async def test_the_final_reply_has_its_own_timeout_once_the_message_is_written(
        slow_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.3 s per reply, 1 s timeout: MAIL, RCPT and DATA take 0.9 s, the final reply comes at
    # 1.2 s. The server has the message by then: timing it out would only send it again.
    monkeypatch.setattr(_AnswersJustInTime, "delay", 0.3)
    pools = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=1.0)
    result = await pools.send(_target(slow_port), "s@acme.test", ["a@example.test"],
                              b"Subject: x\r\n\r\nhi\r\n")
    await pools.close()
    assert result.accepted == ["a@example.test"]
