"""Scriptable SMTP servers for tests, on 127.0.0.1 and an ephemeral port.

``RecordingSmtpServer`` is aiosmtpd running on the *test's own* event loop: it records every
message (envelope, data bytes, connection number) and answers as the test scripts it::

    async with RecordingSmtpServer(tls="starttls", ca=ca, user="u", password="p") as srv:
        srv.script(rcpt={"bad@x.test": "550 5.1.1 User unknown"})
        ...
        assert srv.messages[0].rcpt_tos == ["ok@x.test"]

``SinkServer`` is a minimal hand-written SMTP responder that only counts messages, for
benchmarks where aiosmtpd's per-line overhead would dominate.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    connection: int  # 1-based number of the connection that carried it
    login: str | None
    tls: bool


@dataclass
class Script:
    """Scripted replies; ``None`` means "behave normally"."""

    greeting: str | None = None  # e.g. "421 4.3.2 Service not available" (then close)
    ehlo: str | None = None  # a failing EHLO reply
    mail: str | None = None
    rcpt: dict[str, str] = field(default_factory=dict)  # address (any case) -> reply
    data: str | None = None  # reply after the message data
    noop: str | None = None
    rset: str | None = None
    auth_fail: bool | str = False  # True = "535 5.7.8 ..."; a string = that reply
    disconnect_during_data: bool = False
    data_delay: float = 0.0  # seconds to wait before answering the data (concurrency tests)
    # True/"greeting": silent after accept; "data", "noop": no reply to that command
    hang: bool | str | None = None
    offer_starttls: bool = True
    offer_auth: bool = True


class _Handler:
    def __init__(self, owner: RecordingSmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        sc = self.owner.scripted
        self.owner.commands["EHLO"] += 1
        self.owner.ehlo_names.append(hostname)
        if sc.ehlo:
            return [sc.ehlo]
        session.host_name = hostname  # the 5-argument hook must set it itself
        out = []
        for line in responses:
            word = line[4:].split(" ")[0].upper()
            if word == "STARTTLS" and not sc.offer_starttls:
                continue
            if word == "AUTH" and (not sc.offer_auth or self.owner.user is None):
                continue
            out.append(line)
        if self.owner.pipelining and len(out) > 1:
            out.insert(len(out) - 1, "250-PIPELINING")  # aiosmtpd reads commands in order
        return out

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope,
                          arg: str) -> str:
        self.owner.commands["NOOP"] += 1
        if self.owner.scripted.hang == "noop":
            await self.owner.forever.wait()
        return self.owner.scripted.noop or "250 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner.commands["RSET"] += 1
        return self.owner.scripted.rset or "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner.commands["QUIT"] += 1
        return "221 Bye"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.owner.commands["MAIL"] += 1
        if self.owner.scripted.mail:
            return self.owner.scripted.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.owner.mail_options.append(list(options))
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.owner.commands["RCPT"] += 1
        scripted = {k.lower(): v for k, v in self.owner.scripted.rcpt.items()}
        reply = scripted.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sc = self.owner.scripted
        self.owner.commands["DATA"] += 1
        if sc.disconnect_during_data:
            assert server.transport is not None
            server.transport.close()
            await asyncio.sleep(3600)  # cancelled by connection_lost
        if sc.hang == "data":
            await self.owner.forever.wait()
        if sc.data_delay:
            await asyncio.sleep(sc.data_delay)
        if sc.data:
            return sc.data
        self.owner.messages.append(ReceivedMessage(
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            connection=getattr(server, "number", 0),
            login=(session.auth_data.login.decode()
                   if isinstance(session.auth_data, LoginPassword) else None),
            tls=session.ssl is not None or self.owner.tls == "tls"))
        return "250 2.0.0 OK queued"


class _Protocol(SMTP):
    def __init__(self, owner: RecordingSmtpServer, **kwargs: Any) -> None:
        super().__init__(owner.handler, **kwargs)
        self.owner = owner
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.number == 0:  # a second call happens after STARTTLS on the same session
            self.owner.connections += 1
            self.number = self.owner.connections
            self.owner.live.add(self)
            self.owner.peak_connections = max(self.owner.peak_connections, len(self.owner.live))
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner.live.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        sc = self.owner.scripted
        if sc.hang in (True, "greeting"):
            await self.owner.forever.wait()
            return
        if sc.greeting:
            await self.push(sc.greeting)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class RecordingSmtpServer:
    """aiosmtpd on 127.0.0.1:0, with TLS from a trustme CA, AUTH PLAIN/LOGIN and scripts.

    It offers PIPELINING (RFC 2920) unless told not to, as real MTAs do; tests that must
    cover both client paths flip ``pipelining_default``.
    """

    pipelining_default = True

    def __init__(self, *, tls: str = "none", ca: trustme.CA | None = None,
                 cert_hosts: tuple[str, ...] = (HOST, "localhost"),
                 user: str | None = None, password: str | None = None,
                 hostname: str = "mx.test", pipelining: bool | None = None) -> None:
        if tls not in ("none", "starttls", "tls"):
            raise ValueError(tls)
        if tls != "none" and ca is None:
            raise ValueError("a trustme.CA is needed for TLS")
        self.tls = tls
        self.pipelining = self.pipelining_default if pipelining is None else pipelining
        self.host = HOST
        self.port = 0
        self.user, self.password = user, password
        self.hostname = hostname
        self.handler = _Handler(self)
        self.scripted = Script()
        self.size_limit = 33554432  # aiosmtpd's default; announced as SIZE, checked at MAIL
        self.mail_options: list[list[str]] = []  # the parameters of every MAIL FROM
        self.messages: list[ReceivedMessage] = []
        self.commands: Counter[str] = Counter()
        self.ehlo_names: list[str] = []
        self.connections = 0
        self.live: set[_Protocol] = set()
        self.peak_connections = 0
        self.forever = asyncio.Event()
        self._ctx: ssl.SSLContext | None = None
        if ca is not None and tls != "none":
            self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(*cert_hosts).configure_cert(self._ctx)
        self._server: asyncio.base_events.Server | None = None

    def script(self, **changes: Any) -> None:
        """Replace scripted replies for the following commands, e.g. ``mail="451 ..."``."""
        for name, value in changes.items():
            if not hasattr(self.scripted, name):
                raise TypeError(f"unknown script key {name!r}")
            setattr(self.scripted, name, value)

    def reset_script(self) -> None:
        self.scripted = Script()

    @property
    def open_connections(self) -> int:
        return len(self.live)

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: Any) -> AuthResult:
        self.commands["AUTH"] += 1
        fail = self.scripted.auth_fail
        if isinstance(fail, str):
            return AuthResult(success=False, handled=False, message=fail)
        if (not fail and isinstance(data, LoginPassword)
                and data.login.decode() == self.user
                and data.password.decode() == self.password):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _factory(self) -> _Protocol:
        return _Protocol(
            self, hostname=self.hostname, loop=asyncio.get_running_loop(),
            tls_context=self._ctx if self.tls == "starttls" else None,
            authenticator=self._authenticate, auth_require_tls=False, timeout=30,
            data_size_limit=self.size_limit)

    async def __aenter__(self) -> RecordingSmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, host=HOST, port=0,
            ssl=self._ctx if self.tls == "tls" else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.forever.set()
        assert self._server is not None
        self._server.close()
        for proto in list(self.live):
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0)
        await self._server.wait_closed()


class _SinkProtocol(asyncio.Protocol):
    def __init__(self, owner: SinkServer) -> None:
        self.owner = owner
        self.buf = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.owner.live.discard(self.transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections += 1
        self.owner.live.add(transport)
        transport.write(b"220 sink.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.owner.on_message(self.buf[:end])
                self.buf = self.buf[end + 5:]
                self.in_data = False
                self.transport.write(b"250 2.0.0 OK\r\n")
                continue
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                return
            self.buf = rest
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-sink.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.buf = b"\r\n" + self.buf  # so an empty body still ends on CRLF.CRLF
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")


class SinkServer:
    """Fast SMTP sink: accepts everything, counts messages and connections."""

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self.messages = 0
        self.connections = 0
        self.live: set[asyncio.Transport] = set()
        self._server: asyncio.base_events.Server | None = None

    def on_message(self, data: bytes) -> None:
        """Called with each message's data (subclasses record more than a count)."""
        self.messages += 1

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _SinkProtocol(self), host=HOST, port=0,
                                                backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self.live):
            transport.close()
        await self._server.wait_closed()
