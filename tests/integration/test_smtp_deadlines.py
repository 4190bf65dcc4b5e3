"""Reply deadlines of an SMTP session (``send_timeout``) against raw loopback servers.

Each reply, and each wait for the write buffer to drain, must come within the pool's
``send_timeout``; one timer per session keeps that (not a timeout context per wait).
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
