"""SMTP mail transactions on an established session, with RFC 2920 command pipelining.

aiosmtplib opens the session (greeting, EHLO, STARTTLS, AUTH: the parts where its checks
matter); then this channel takes the transport over for the transactions. aiosmtplib reads
one reply per command it wrote and drops replies that arrive early, so it cannot pipeline.
When the server offers PIPELINING, MAIL FROM, every RCPT TO and DATA go out in one write
(with the previous message's body, when transactions follow each other) and their replies
are read in order: two round trips per message instead of 3 + recipients,
which is most of a transaction's cost on a real network (and much of its CPU on loopback).

Replies and failures keep aiosmtplib's shapes (``SMTPResponse``, ``SMTPServerDisconnected``)
so the classification in ``classify`` is the same for both halves of a session.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import aiosmtplib
from aiosmtplib import SMTPResponse

from mail_proxy.delivery import classify as c
from mail_proxy.errors import PermanentFailure

# A reply longer than this is not SMTP: the session is dropped instead of buffering forever.
MAX_REPLY_BYTES = 64 * 1024
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_RCPT_OK = (250, 251)
# A message body up to this size waits for the next transaction's envelope to leave with it
# (RFC 2920 §3.1 lets message content start a group), for this many event loop iterations
# at most: the send loop needs two or three to start the next transaction. One write and
# one server read per message instead of two; the writes were a quarter of the worker's
# event loop time on loopback.
CORK_BYTES = 64 * 1024
CORK_ITERATIONS = 4
_EXPECTED = frozenset({250, 251, 354})
# Linux only: elsewhere the channel works the same, without the early acknowledgements.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def data_block(message: bytes) -> bytes:
    """The message as sent after 354: CRLF line endings, dot-stuffed, terminated."""
    # Composed messages already use CRLF and rarely have a line starting with ".": three
    # byte counts and a search are much cheaper than rewriting every message with a regex.
    lf = message.count(b"\n")
    if lf != message.count(b"\r\n") or lf != message.count(b"\r"):
        message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    return message + b".\r\n"


@dataclass
class Pending:
    """A transaction whose message is written; ``final`` is the server's last word."""

    accepted: list[str]
    refused: list[dict[str, Any]]
    final: asyncio.Future[SMTPResponse]


@dataclass
class SendResult:
    """Per-recipient result of one transaction that reached the end of DATA."""

    accepted: list[str]
    refused: list[dict[str, Any]] = field(default_factory=list)
    smtp_code: int = 250
    seconds: float | None = field(default=None, compare=False)  # connection acquired → final reply


class SmtpChannel(asyncio.Protocol):
    """Commands and replies on one session; one transaction at a time (the pool's lease)."""

    def __init__(self, transport: asyncio.Transport, *, pipelining: bool,
                 size: bool = False) -> None:
        self.transport = transport
        self.pipelining = pipelining
        # RFC 1870: MAIL FROM names the message's size, so a server whose limit it passes
        # refuses at once (552 to MAIL) instead of after receiving it all
        self.size = size
        self._buffer = bytearray()
        # One future per command written, in write order: replies are matched to commands
        # by position, so two transactions can overlap (one waiting for its final reply
        # while the next one's envelope is already on the wire). A reply is therefore only
        # ever paired with the oldest command still waiting; one that arrives when no
        # written command waits answers nothing and ends the session (_spare_reply).
        self._expected: deque[asyncio.Future[SMTPResponse]] = deque()
        self._unwritten = 0  # how many of the last futures in _expected belong to _corked
        self._lost: BaseException | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self.stage = c.MAIL  # what the reply being waited for answers (error messages)
        self.recipients_accepted = False  # in the transaction under way
        # Every reply must come within reply_timeout (the pool's send_timeout) of its
        # command being queued, or of the end of a long upload for the final reply. One
        # timer per session, re-armed only when it fires, instead of a timeout context per
        # wait: two per message cost about 5 % of the event loop's time under load.
        self.reply_timeout: float | None = None
        self._deadlines: deque[float] = deque()  # of the futures in _expected, in order
        self._timer: asyncio.TimerHandle | None = None
        self._socket: Any = transport.get_extra_info("socket") if _QUICKACK else None
        self._corked = b""  # a body waiting for the next envelope (see CORK_BYTES)
        self._flush_in = 0  # loop iterations it may still wait

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP) -> SmtpChannel:
        """Move a connected, idle aiosmtplib session onto a channel."""
        transport = cast(asyncio.Transport, client.transport)
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        channel = cls(transport, pipelining=client.supports_extension("pipelining"),
                      size=client.supports_extension("size"))
        transport.set_protocol(channel)
        # The client must not close the transport now that the channel owns it.
        client.transport = None
        client.protocol = None
        return channel

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        while (reply := self._parse_one()) is not None:
            if len(self._expected) <= self._unwritten:
                self._spare_reply(reply)
                return
            future = self._expected.popleft()
            self._deadlines.popleft()
            if not future.done():  # its waiter may have given up; the reply is used anyway
                future.set_result(reply)
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "reply too long"))
            self.transport.abort()
            return
        if len(self._expected) > self._unwritten and self._socket is not None:
            self._acknowledge_now()

    def _spare_reply(self, reply: SMTPResponse) -> None:
        # No written command waits for it: a server speaking out of turn, or one that sent
        # two replies to one command. Pairing it with the next command would shift every
        # later reply by one (MAIL taking the spare 250, DATA the RCPT's 250, so a message
        # failed permanently on a "250"); the session state is unknown, so it ends here and
        # whatever still waits fails as a transient protocol error. Pipelined replies that
        # arrive in batches always have their commands waiting, so they never land here.
        self._protocol_error(f"reply to no command: {reply.code} {reply.message}")

    def _acknowledge_now(self) -> None:
        # More replies are due and nothing may be written until they come: acknowledge what
        # arrived at once instead of after the kernel's delayed-ACK timer (40 ms on Linux).
        # A server that answers a pipelined group in two writes without TCP_NODELAY holds
        # the second one (Nagle) until its first is acknowledged; with transactions
        # overlapping (the next envelope written before the last message's final reply)
        # that stalled a connection for 40 ms every few dozen messages: one connection into
        # Postfix's smtp-sink delivered 1,600 msgs/s instead of 2,000-2,300.
        try:
            self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            self._socket = None  # not a TCP socket after all: never try again

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        if exc is not None:
            error.__cause__ = exc
        self._fail(error)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._disarm()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- state --------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def close(self) -> None:
        """Drop the session without QUIT (its state may be unknown)."""
        self._flush()
        if not self.transport.is_closing():
            self.transport.close()

    # -- commands -----------------------------------------------------------------------

    async def command(self, line: bytes) -> SMTPResponse:
        """One command and its reply (NOOP, RSET, QUIT)."""
        [reply] = self._send(line + b"\r\n", 1)
        return await reply

    async def finish(self, pending: Pending) -> SendResult:
        """Wait for the reply to the end of the message."""
        final = await pending.final
        # Any 2xx accepts the message (RFC 5321 §4.2.1: the first digit decides).
        if not 200 <= final.code < 300:
            raise self._refusal(c.DATA, final, pending.refused)
        return SendResult(accepted=pending.accepted, refused=pending.refused,
                          smtp_code=final.code)

    async def begin(self, mail_from: str, rcpts: list[str], data: bytes) -> Pending:
        """MAIL, RCPT..., DATA and the message, up to the wait for the final reply.

        Raises a classified failure on a refusal; connection errors and timeouts propagate
        unclassified (the pool knows the host). Every reply asked for before the message is
        read before raising, so a session that stays connected is in a known state: between
        transactions, or in one that the caller ends with RSET. Once this returns, the
        session is between transactions as far as the server is concerned, and with
        PIPELINING the next transaction may be written before this one's final reply.
        """
        size = b" SIZE=%d" % len(data) if self.size else b""
        envelope = [b"MAIL FROM:<" + _ascii(mail_from) + b">" + size + b"\r\n"]
        envelope += [b"RCPT TO:<" + _ascii(r) + b">\r\n" for r in rcpts]
        data_reply: SMTPResponse | None = None
        self.stage = c.MAIL
        self.recipients_accepted = False
        # send_timeout bounds the envelope, not each reply: a server that answers every
        # command just in time must not hold a message (and its slot) for a timeout per
        # recipient. MAIL, every RCPT and DATA share this deadline; the reply to the end of
        # data gets its own send_timeout from when the message is written, because once the
        # server has the message a timeout can only make a duplicate.
        by = (None if self.reply_timeout is None
              else asyncio.get_running_loop().time() + self.reply_timeout)
        if self.pipelining:
            got = await self._replies_until_lost(
                self._send(b"".join(envelope) + b"DATA\r\n", len(envelope) + 1, by=by))
            mail, replies = got[0], got[1:len(envelope)]
            if len(got) == len(envelope) + 1:
                data_reply = got[-1]
        else:
            mail = await self._send(envelope[0], 1, by=by)[0]
            replies = []
            if mail.code == 250:
                self.stage = c.RCPT
                for line in envelope[1:]:
                    replies.append(reply := await self._send(line, 1, by=by)[0])
                    if reply.code == 421:
                        break  # the server is closing the session
        if mail.code != 250:
            failure = self._refusal(c.MAIL, mail)
            await self._end_unwanted_data(data_reply)
            raise failure
        accepted, refused = _sort_recipients(rcpts, replies)
        self.recipients_accepted = bool(accepted)
        if refused:  # a RCPT reply that neither accepts nor refuses answers something else
            odd = next((r for r in replies if r.code < 400 and r.code not in _RCPT_OK), None)
            if odd is not None:
                raise self._refusal(c.RCPT, odd)
        closing = next((r for r in replies if r.code == 421), None)
        if closing is not None:
            # Never end DATA here: recipients accepted before the 421 would get an empty
            # message. The session is dropped instead (a throttle failure is "broken").
            raise c.reply_failure(c.RCPT, 421, closing.message, refused=refused)
        if len(replies) < len(rcpts) or (self.pipelining and data_reply is None):
            raise self._lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        if not accepted:
            await self._end_unwanted_data(data_reply)
            raise c.all_refused_failure(refused)
        self.stage = c.DATA
        if data_reply is None:
            data_reply = await self._send(b"DATA\r\n", 1, by=by)[0]
        if data_reply.code != 354:
            raise self._refusal(c.DATA, data_reply, refused)
        block = data_block(data)
        [final] = self._send(block, 1, cork=self.pipelining and len(block) <= CORK_BYTES)
        await self._drain()
        return Pending(accepted=accepted, refused=refused, final=final)

    async def _replies_until_lost(self, futures: list[asyncio.Future[SMTPResponse]]
                                  ) -> list[SMTPResponse]:
        """The replies in order; fewer only when the server hung up after refusing
        something (its refusal explains the hang-up better than "connection lost")."""
        got: list[SMTPResponse] = []
        count = len(futures)
        for future in futures:
            self.stage = c.MAIL if not got else c.RCPT if len(got) < count - 1 else c.DATA
            try:
                got.append(await future)
            except aiosmtplib.SMTPServerDisconnected:
                if any(r.code not in _EXPECTED for r in got):
                    return got
                raise
        return got

    async def _end_unwanted_data(self, data_reply: SMTPResponse | None) -> None:
        """A server that said 354 although no recipient was accepted gets an empty message
        terminator (RFC 2920 §3.1); it has nobody to deliver it to."""
        if data_reply is not None and data_reply.code == 354 and self.is_connected:
            await self._send(b".\r\n", 1)[0]

    def _refusal(self, stage: str, reply: SMTPResponse,
                 refused: list[dict[str, Any]] | None = None) -> Exception:
        """What a reply other than the success awaited at ``stage`` means.

        A 4xx or 5xx refuses (classified as usual). Anything else answers another command
        (a spare reply shifted the pairing) or makes no sense here, a 250 to DATA say: never
        a refusal, so never permanent; the session is dropped as in a protocol error.
        """
        if 400 <= reply.code < 600:
            return c.reply_failure(stage, reply.code, reply.message, refused=refused)
        return self._protocol_error(f"{stage.upper()} answered {reply.code} {reply.message}")

    def _protocol_error(self, reason: str) -> aiosmtplib.SMTPResponseException:
        """End a session whose state is unknown; the error is what every waiter gets."""
        error = aiosmtplib.SMTPResponseException(-1, reason)
        self._fail(error)
        self.transport.abort()
        return error

    # -- I/O ----------------------------------------------------------------------------

    def _send(self, data: bytes, replies: int, *, cork: bool = False,
              by: float | None = None) -> list[asyncio.Future[SMTPResponse]]:
        """Write and register the replies expected, before any other command can be.

        The replies are due ``by`` that loop time (a transaction's deadline), else within
        ``reply_timeout`` from now."""
        if not self.is_connected:
            raise self._lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        loop = asyncio.get_running_loop()
        if self._corked:
            data = self._corked + data
            self._corked = b""
        if cork:
            self._corked = data
            self._unwritten += replies  # no reply can answer these before they are written
            if not self._flush_in:
                loop.call_soon(self._flush_later)
            self._flush_in = CORK_ITERATIONS
        else:
            self.transport.write(data)
            self._unwritten = 0
        futures = [loop.create_future() for _ in range(replies)]
        self._expected.extend(futures)
        if self.reply_timeout is not None:
            deadline = by if by is not None else loop.time() + self.reply_timeout
            self._deadlines.extend([deadline] * replies)
            self._arm(loop, deadline)
        else:
            self._deadlines.extend([float("inf")] * replies)
        return futures

    def _flush_later(self) -> None:
        self._flush_in -= 1
        if self._flush_in > 0 and self._corked:
            asyncio.get_running_loop().call_soon(self._flush_later)
            return
        self._flush_in = 0
        self._flush()

    def _flush(self) -> None:
        if self._corked:
            data, self._corked = self._corked, b""
            self._unwritten = 0
            if not self.transport.is_closing():
                self.transport.write(data)

    async def _drain(self) -> None:
        # A large message may exceed the transport's buffer: wait until it is flushed (the
        # final reply's deadline, set when the message was queued, bounds the upload), then
        # give the server the whole reply timeout for its answer.
        if self._paused and self.is_connected:
            loop = asyncio.get_running_loop()
            self._drained = loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None
            if self.reply_timeout is not None and self._deadlines:
                later = loop.time() + self.reply_timeout
                self._deadlines = deque(max(d, later) for d in self._deadlines)

    def _fail(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        self._deadlines.clear()
        self._unwritten = 0
        while self._expected:
            future = self._expected.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # nobody may be waiting any more: no "never retrieved"

    # -- reply deadlines ----------------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        # Deadlines grow (each wait starts later than the ones before it), so a timer already
        # armed usually fires first, and then re-arms itself for what is left; only a
        # shorter send_timeout (changed settings) needs it moved.
        if self._timer is not None and self._timer.when() > deadline:
            self._disarm()
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadlines)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_deadlines(self) -> None:
        self._timer = None
        due = min(self._deadlines, default=float("inf"))  # a handful at most
        if due == float("inf"):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check_deadlines)
            return
        error = TimeoutError(f"no reply from the server within {self.reply_timeout} s")
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(error)
        self._fail(error)
        self.transport.abort()

    def _parse_one(self) -> SMTPResponse | None:
        """Take one complete (possibly multi-line) reply off the buffer, if there is one."""
        buf = self._buffer
        offset = 0
        lines: list[bytes] = []
        while True:
            end = buf.find(b"\n", offset)
            if end == -1:
                return None
            line = bytes(buf[offset:end + 1])
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        try:
            # three digits, then a space, a hyphen or the end of the line (RFC 5321 §4.2):
            # "2500 ok" is not a 250 (delivery hunt)
            code = int(line[:3]) if line[:3].isdigit() and line[3:4] in _AFTER_CODE else -1
        except ValueError:
            code = -1
        del buf[:offset]
        if code < 200 or code > 599:
            self._fail(aiosmtplib.SMTPResponseException(
                -1, f"malformed SMTP reply: {line[:80].decode('ascii', 'replace')!r}"))
            self.transport.abort()
            return None
        return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))


_AFTER_CODE = (b" ", b"-", b"\r", b"\n", b"")


def _ascii(address: str) -> bytes:
    raw = address.encode("ascii")  # validated at enqueue: IDNA domains, ASCII local parts
    if _CONTROL.search(raw):
        raise PermanentFailure(f"control character in envelope address {address!r}",
                               code="invalid_address")
    return raw


def _sort_recipients(rcpts: list[str], replies: list[SMTPResponse]
                     ) -> tuple[list[str], list[dict[str, Any]]]:
    accepted: list[str] = []
    refused: list[dict[str, Any]] = []
    for rcpt, reply in zip(rcpts, replies, strict=False):
        if reply.code in _RCPT_OK:
            accepted.append(rcpt)
        else:
            refused.append(c.refused_entry(rcpt, reply.code, reply.message))
    return accepted, refused

