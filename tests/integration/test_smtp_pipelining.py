"""RFC 2920 pipelining on pooled connections, against a server that proves it.

``BatchingServer`` offers PIPELINING and, as the RFC allows, answers nothing until the DATA
command has arrived: a client that waits for each reply before the next command would hang
(and fail on the send timeout). Its replies are scripted per command and per recipient.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest

from mail_proxy.delivery.smtp import SmtpPools, SmtpTarget
from mail_proxy.delivery.smtp_channel import SmtpChannel, data_block
from mail_proxy.errors import PermanentFailure, ThrottleFailure, TransientFailure

pytestmark = pytest.mark.timeout(10)
HOST = "127.0.0.1"


@dataclass
class Session:
    commands: list[bytes] = field(default_factory=list)
    groups: list[list[bytes]] = field(default_factory=list)  # commands answered together
    bodies: list[bytes] = field(default_factory=list)


class BatchingServer:
    def __init__(self, *, mail: bytes = b"250 OK", rcpt: dict[str, bytes] | None = None,
                 data: bytes = b"354 go ahead", final: bytes = b"250 2.0.0 queued",
                 hang_up_after_group: bool = False, hold_final: bool = False,
                 finals: list[bytes] | None = None, group_delay: float = 0.0) -> None:
        self.mail, self.rcpt, self.data, self.final = mail, rcpt or {}, data, final
        # hold_final: the reply to a message waits until the next command arrives, so only a
        # client that writes the next envelope before reading that reply gets it in time.
        self.hold_final = hold_final
        self.finals = list(finals or [])  # replies to the messages, in order, then `final`
        self.hang_up_after_group = hang_up_after_group
        # the replies to a group come this long after the previous message's final reply,
        # in a write of their own (as from a server whose input arrived in two reads)
        self.group_delay = group_delay
        self.sessions: list[Session] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> BatchingServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Batching(self), host=HOST, port=0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


class _Batching(asyncio.Protocol):
    def __init__(self, owner: BatchingServer) -> None:
        self.owner = owner
        self.session = Session()
        owner.sessions.append(self.session)
        self.buf = b""
        self.pending: list[bytes] = []
        self.in_data = False
        self.held = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 batching.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.transport.is_closing():
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                body, self.buf = self.buf[2:end + 5], self.buf[end + 5:]
                self.in_data = False
                if body == b".\r\n":  # the empty message that ends a refused DATA
                    self.session.commands.append(b"<end of empty data>")
                    self.transport.write(b"554 5.5.1 no valid recipients\r\n")
                else:
                    self.session.bodies.append(body)
                    reply = (self.owner.finals.pop(0) if self.owner.finals
                             else self.owner.final) + b"\r\n"
                    if self.owner.hold_final:
                        self.held = reply
                    else:
                        self.transport.write(reply)
                continue
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                return
            self.buf = rest
            if self.held:
                self.transport.write(self.held)
                self.held = b""
            self.session.commands.append(line)
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-batching.test\r\n250 PIPELINING\r\n")
            elif verb in (b"RSET", b"NOOP"):
                self.transport.write(b"250 OK\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
            elif verb in (b"MAIL", b"RCPT"):
                self.pending.append(line)
            elif verb == b"DATA":
                self.pending.append(line)
                self._answer_group()

    def _answer_group(self) -> None:
        group, self.pending = self.pending, []
        self.session.groups.append(group)
        out = []
        for line in group:
            if line.startswith(b"MAIL"):
                out.append(self.owner.mail)
            elif line.startswith(b"RCPT"):
                address = line[line.index(b"<") + 1:line.index(b">")].decode()
                out.append(self.owner.rcpt.get(address, b"250 OK"))
            else:
                out.append(self.owner.data)
                if self.owner.data.startswith(b"354"):
                    self.in_data = True
                    self.buf = b"\r\n" + self.buf  # so an empty body also ends on CRLF.CRLF
        if self.owner.hang_up_after_group:
            # Answer only up to the first refusal, then hang up (as a server closing with 421).
            bad = next((i for i, r in enumerate(out) if not r.startswith((b"250", b"354"))), 0)
            self.transport.write(b"".join(r + b"\r\n" for r in out[:bad + 1]))
            self.transport.close()
            return
        answer = b"".join(r + b"\r\n" for r in out)
        if self.owner.group_delay:
            asyncio.get_running_loop().call_later(self.owner.group_delay, self._write, answer)
        else:
            self.transport.write(answer)

    def _write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


def target(port: int) -> SmtpTarget:
    return SmtpTarget(tenant_id="acme", account_id="main", host=HOST, port=port,
                      tls_mode="none")


async def test_envelope_and_data_go_out_as_one_group(pools: SmtpPools) -> None:
    async with BatchingServer() as srv:
        result = await pools.send(target(srv.port), "s@acme.test",
                                  ["a@x.test", "b@x.test"], b"Subject: hi\r\n\r\n.dot\r\n")
        second = await pools.send(target(srv.port), "s@acme.test", ["c@x.test"], b"x\r\n")
    assert (result.accepted, result.refused, result.smtp_code) == (["a@x.test", "b@x.test"],
                                                                   [], 250)
    assert second.accepted == ["c@x.test"]
    [session] = srv.sessions  # one pooled connection for both messages
    assert session.groups[0] == [b"MAIL FROM:<s@acme.test>", b"RCPT TO:<a@x.test>",
                                 b"RCPT TO:<b@x.test>", b"DATA"]
    assert session.bodies[0] == b"Subject: hi\r\n\r\n..dot\r\n.\r\n"  # dot-stuffed


async def test_next_envelope_goes_out_before_the_final_reply(pools: SmtpPools) -> None:
    """One connection, three messages: each envelope is written while the previous
    message's final reply is still outstanding (the server holds it until then)."""
    async with BatchingServer(hold_final=True, finals=[b"554 5.7.1 rejected as spam"]) as srv:
        t = SmtpTarget(tenant_id="acme", account_id="main", host=HOST, port=srv.port,
                       tls_mode="none", max_connections=1)
        sends = [asyncio.create_task(pools.send(t, "s@acme.test", [f"{n}@x.test"], body))
                 for n, body in (("a", b"one\r\n"), ("b", b"two\r\n"), ("c", b"three\r\n"))]
        first, second = await asyncio.gather(*sends[:2], return_exceptions=True)
        third = sends[2]
        await asyncio.sleep(0.2)
        assert not third.done()  # its final reply waits for a next command that never comes
        await pools.close()  # QUIT is that command
        result = await third
    assert isinstance(first, PermanentFailure) and first.smtp_code == 554
    assert not isinstance(second, BaseException) and second.accepted == ["b@x.test"]
    assert result.accepted == ["c@x.test"]
    [session] = srv.sessions
    assert session.bodies == [b"one\r\n.\r\n", b"two\r\n.\r\n", b"three\r\n.\r\n"]
    assert session.commands[-1] == b"QUIT"


async def test_some_recipients_refused(pools: SmtpPools) -> None:
    async with BatchingServer(rcpt={"b@x.test": b"550 5.1.1 no such user"}) as srv:
        result = await pools.send(target(srv.port), "s@acme.test", ["a@x.test", "b@x.test"],
                                  b"x\r\n")
    assert result.accepted == ["a@x.test"]
    assert result.refused == [{"address": "b@x.test", "smtp_code": 550,
                               "message": "5.1.1 no such user"}]
    assert len(srv.sessions[0].bodies) == 1


async def test_every_recipient_refused_after_a_354_ends_with_an_empty_message(
        pools: SmtpPools) -> None:
    """A server that said 354 although nobody was accepted gets "." (and nobody gets mail);
    the connection is reset and reused."""
    async with BatchingServer(rcpt={"a@x.test": b"550 5.1.1 no such user"}) as srv:
        with pytest.raises(PermanentFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test"], b"x\r\n")
        await pools.send(target(srv.port), "s@acme.test", ["ok@x.test"], b"y\r\n")
    assert info.value.code == "all_recipients_refused"
    [session] = srv.sessions
    assert b"<end of empty data>" in session.commands and b"RSET" in session.commands
    # The empty DATA ends inside the refused transaction; only the second message has a body.
    assert session.bodies == [b"y\r\n.\r\n"]


async def test_refused_sender_with_a_hang_up_keeps_the_servers_reason(pools: SmtpPools) -> None:
    async with BatchingServer(mail=b"421 4.7.0 too many connections",
                              hang_up_after_group=True) as srv:
        with pytest.raises(ThrottleFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test"], b"x\r\n")
    assert info.value.smtp_code == 421
    assert "too many connections" in str(info.value)


async def test_rcpt_421_never_ends_data_for_the_accepted_recipients(pools: SmtpPools) -> None:
    async with BatchingServer(rcpt={"b@x.test": b"421 4.4.5 closing"}) as srv:
        with pytest.raises(ThrottleFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test", "b@x.test"],
                             b"x\r\n")
    assert info.value.smtp_code == 421
    assert srv.sessions[0].bodies == []
    assert b"<end of empty data>" not in srv.sessions[0].commands


async def test_data_refused_after_accepted_recipients(pools: SmtpPools) -> None:
    async with BatchingServer(data=b"452 4.3.1 insufficient storage") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test"], b"x\r\n")
    assert (info.value.code, info.value.smtp_code) == ("smtp_transient", 452)


async def test_a_malformed_reply_drops_the_connection(pools: SmtpPools) -> None:
    async with BatchingServer(mail=b"hello there") as srv:
        with pytest.raises(TransientFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test"], b"x\r\n")
    assert info.value.code == "connection_failed"
    assert pools.stats()[("acme", "main")] == {"idle": 0, "busy": 0}


class RecordingSocket:
    """The channel's real socket, with every TCP_QUICKACK request noted along with how
    many replies the channel was still waiting for at that moment."""

    def __init__(self, channel: SmtpChannel, *, fail: bool = False) -> None:
        self.channel, self.real, self.fail = channel, channel._socket, fail
        self.waiting_at_ack: list[int] = []

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        if option == getattr(socket, "TCP_QUICKACK", None):
            self.waiting_at_ack.append(len(self.channel._expected))
            if self.fail:
                raise OSError("not supported here")
        self.real.setsockopt(level, option, value)


async def _channel(port: int) -> SmtpChannel:
    client = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, use_tls=False,
                             timeout=2)
    await client.connect()
    await client.ehlo()
    channel = SmtpChannel.take_over(client)
    assert channel.pipelining
    return channel


async def _overlapping_sends(channel: SmtpChannel, count: int) -> list[int]:
    """Each envelope written before the previous message's final reply, as the pool does."""
    codes, previous = [], None
    for n in range(count):
        pending = await channel.begin("s@acme.test", [f"{n}@x.test"], b"x\r\n")
        if previous is not None:
            codes.append((await channel.finish(previous)).smtp_code)
        previous = pending
    assert previous is not None
    codes.append((await channel.finish(previous)).smtp_code)
    return codes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux's")
async def test_replies_that_leave_more_due_are_acknowledged_at_once() -> None:
    """With transactions overlapping, a read that leaves replies outstanding asks the kernel
    to acknowledge it now: a server that answers in two writes under Nagle's algorithm
    would otherwise hold its second write until the delayed ACK (40 ms on Linux)."""
    async with BatchingServer(group_delay=0.01) as srv:
        channel = await _channel(srv.port)
        spy = RecordingSocket(channel)
        channel._socket = spy
        codes = await _overlapping_sends(channel, 20)
        channel.close()
    assert codes == [250] * 20
    # each final reply arrives alone while the next envelope's replies are due: 19 times,
    # fewer only if a stalled test loop read a final reply and the next group together
    assert len(spy.waiting_at_ack) >= 10
    assert all(waiting > 0 for waiting in spy.waiting_at_ack)  # never when nothing is due


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux's")
async def test_a_socket_refusing_quickack_is_left_alone_and_sends_go_on() -> None:
    async with BatchingServer(group_delay=0.01) as srv:
        channel = await _channel(srv.port)
        spy = RecordingSocket(channel, fail=True)
        channel._socket = spy
        codes = await _overlapping_sends(channel, 5)
        channel.close()
    assert codes == [250] * 5
    assert len(spy.waiting_at_ack) == 1 and channel._socket is None  # asked once, then never


class RecordingTransport:
    """The channel's real transport, with every write kept."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_body_and_the_next_envelope_leave_in_one_write() -> None:
    """RFC 2920 lets a message's content start a group: each body waits (a few loop
    iterations at most) for the next transaction's envelope to leave with it, one system
    call and one server read per message instead of two."""
    async with BatchingServer() as srv:
        channel = await _channel(srv.port)
        spy = RecordingTransport(channel.transport)
        channel.transport = spy  # type: ignore[assignment]
        codes = await _overlapping_sends(channel, 5)
        channel.close()
    assert codes == [250] * 5
    assert len(spy.writes) == 6, spy.writes
    assert spy.writes[0].startswith(b"MAIL FROM:<s@acme.test>\r\n")
    for n, write in enumerate(spy.writes[1:5]):
        assert write == (b"x\r\n.\r\nMAIL FROM:<s@acme.test>\r\n"
                         + f"RCPT TO:<{n + 1}@x.test>\r\nDATA\r\n".encode())
    assert spy.writes[5] == b"x\r\n.\r\n"  # the last one alone: nothing came after it


async def test_a_held_body_leaves_before_the_session_is_dropped() -> None:
    async with BatchingServer() as srv:
        channel = await _channel(srv.port)
        await channel.begin("s@acme.test", ["a@x.test"], b"kept\r\n")
        channel.close()  # at once: the body was still waiting for a next envelope
        for _ in range(100):
            if srv.sessions[0].bodies:
                break
            await asyncio.sleep(0.01)
    assert srv.sessions[0].bodies == [b"kept\r\n.\r\n"]


async def test_a_lone_message_is_not_held_back() -> None:
    """Without a next transaction the body leaves within a few loop iterations."""
    async with BatchingServer() as srv:
        channel = await _channel(srv.port)
        pending = await channel.begin("s@acme.test", ["a@x.test"], b"alone\r\n")
        # a body never flushed would leave this waiting for ever (no reply timeout is set)
        result = await asyncio.wait_for(channel.finish(pending), 5)
        channel.close()
    assert result.smtp_code == 250


def test_data_block_normalises_line_endings_and_stuffs_dots() -> None:
    assert data_block(b"a\nb\r.c\r\n.\r\nend") == b"a\r\nb\r\n..c\r\n..\r\nend\r\n.\r\n"
    assert data_block(b"") == b"\r\n.\r\n"


def test_data_block_fast_path_matches_the_general_rewrite() -> None:
    import random
    import re

    def reference(message: bytes) -> bytes:
        message = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        return re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"

    rng = random.Random(7)
    for _ in range(2000):
        message = bytes(rng.choice(b"\r\n.ab") for _ in range(rng.randrange(12)))
        assert data_block(message) == reference(message), message


async def test_replies_in_latin1_are_read_as_text_a_database_can_store(pools: SmtpPools
                                                                        ) -> None:
    """Replies are decoded as UTF-8 with surrogate escapes; Latin-1 text ("Empf\\xe4nger")
    left lone surrogates in the failure, whose outcome then could not be written."""
    async with BatchingServer(rcpt={"a@x.test": b"550 5.1.1 Empf\xe4nger unbekannt",
                                    "b@x.test": b"550 5.1.1 Empf\xe4nger unbekannt"}) as srv:
        with pytest.raises(PermanentFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test", "b@x.test"],
                             b"x\r\n")
    failure = info.value
    assert failure.code == "all_recipients_refused"
    assert [r["message"] for r in failure.refused] == ["5.1.1 Empfänger unbekannt"] * 2
    failure.message.encode("utf-8")  # storable: no lone surrogate left
    async with BatchingServer(data=b"554 5.7.1 Nachricht abgelehnt: \xfcberpr\xfcfen") as srv:
        with pytest.raises(PermanentFailure) as info:
            await pools.send(target(srv.port), "s@acme.test", ["a@x.test"], b"x\r\n")
    assert info.value.message == "554 5.7.1 Nachricht abgelehnt: überprüfen"
