"""A step-by-step SMTP session for ``accounts test`` (cli.md §6.2).

It connects the way the dispatcher does (same TLS context rules, same AUTH preference, same
failure classification of delivery.md §4) but stops to time and describe every step: DNS,
TCP connect, TLS handshake or STARTTLS (protocol, certificate subject, issuer, expiry), EHLO
capabilities, AUTH mechanism, NOOP, an optional test message, and QUIT. The first failing
step ends the probe; its classified code and reason are in the last :class:`Step`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from mail_proxy.delivery import classify as c
from mail_proxy.errors import DeliveryFailure, PermanentFailure

AUTH_PREFERENCE = ("cram-md5", "plain", "login")  # the dispatcher's order


@dataclass
class ProbeTarget:
    host: str
    port: int
    tls_mode: str  # "tls" | "starttls" | "none"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_verify: bool = True
    tls_ca_file: str | None = None


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    code: str | None = None  # classification code of a failed step

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "seconds": round(self.seconds, 3),
                "detail": self.detail, "code": self.code}


class _Stop(Exception):
    pass


def _cert_text(ssl_object: Any) -> str:
    """``TLSv1.3, subject CN=…, issuer CN=…, expires 2027-01-01`` from the peer certificate."""
    parts = [str(ssl_object.version())]
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        parts.append(f"subject {cert.subject.rfc4514_string() or '-'}")
        parts.append(f"issuer {cert.issuer.rfc4514_string() or '-'}")
        parts.append(f"expires {cert.not_valid_after_utc.strftime('%Y-%m-%d')}")
    return ", ".join(parts)


class Probe:
    def __init__(self, target: ProbeTarget, *, timeout: float, ehlo_name: str,
                 on_step: Callable[[Step], None] | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.ehlo_name = ehlo_name
        self.steps: list[Step] = []
        self.on_step = on_step  # each step as it ends: a slow server shows where it waits
        self.client: aiosmtplib.SMTP | None = None

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def _fail(self, exc: BaseException, stage: str) -> DeliveryFailure:
        t = self.target
        if isinstance(exc, DeliveryFailure):
            return exc
        if isinstance(exc, TimeoutError):
            return c.timeout_failure(t.host, t.port, stage, self.timeout)
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
            return c.reply_failure(stage, exc.code, exc.message, user=t.user)
        return c.connection_failure(exc, t.host, t.port, stage)

    async def _step(self, name: str, stage: str, work: Callable[[], Awaitable[str]]) -> None:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                detail = await work()
        except (aiosmtplib.SMTPException, OSError, TimeoutError, DeliveryFailure) as exc:
            failure = self._fail(exc, stage)
            self._record(Step(name, False, time.monotonic() - began, failure.message,
                              failure.code))
            raise _Stop from exc
        self._record(Step(name, True, time.monotonic() - began, detail))

    def _record(self, step: Step) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    async def run(self, *, mail_from: str | None = None, rcpt: str | None = None) -> list[Step]:
        try:
            await self._session(mail_from, rcpt)
        except _Stop:
            pass
        finally:
            if self.client is not None:
                self.client.close()
        return self.steps

    async def _session(self, mail_from: str | None, rcpt: str | None) -> None:
        t = self.target
        loop = asyncio.get_running_loop()
        infos: list[Any] = []

        async def resolve() -> str:
            infos.extend(await loop.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM))
            return ", ".join(dict.fromkeys(str(i[4][0]) for i in infos))

        await self._step("DNS resolution", c.GREETING, resolve)
        sock: socket.socket | None = None

        async def connect_tcp() -> str:
            nonlocal sock
            last: OSError | None = None
            for family, kind, proto, _name, addr in infos:
                candidate = socket.socket(family, kind, proto)
                candidate.setblocking(False)
                try:
                    await loop.sock_connect(candidate, addr)
                except OSError as exc:
                    candidate.close()
                    last = exc
                    continue
                sock = candidate
                return f"connected to {addr[0]} port {addr[1]}"
            raise last or OSError(f"no address for {t.host}")

        await self._step("TCP connect", c.GREETING, connect_tcp)
        ctx = None
        if t.tls_mode in ("tls", "starttls"):
            from mail_proxy.delivery.tls import context_for

            ctx = await context_for(verify=t.tls_verify, ca_file=t.tls_ca_file)
        self.client = client = aiosmtplib.SMTP(
            hostname=t.host, sock=sock, local_hostname=self.ehlo_name, timeout=self.timeout,
            use_tls=t.tls_mode == "tls", start_tls=False,
            tls_context=ctx if t.tls_mode == "tls" else None)

        async def greet() -> str:
            reply = await client.connect()
            if t.tls_mode == "tls":
                return _cert_text(client.get_transport_info("ssl_object"))
            return c.reply_text(reply.code, reply.message)

        await self._step("TLS handshake" if t.tls_mode == "tls" else "greeting", c.GREETING,
                         greet)

        async def ehlo() -> str:
            await client.ehlo()
            return " ".join(sorted(k.upper() for k in client.esmtp_extensions)) or "(none)"

        await self._step("EHLO", c.EHLO, ehlo)
        if t.tls_mode == "starttls":
            async def starttls() -> str:
                if not client.supports_extension("starttls"):
                    raise PermanentFailure(f"STARTTLS not offered by {t.host}:{t.port}",
                                           code="starttls_unavailable")
                await client.starttls(tls_context=ctx)
                return _cert_text(client.get_transport_info("ssl_object"))

            await self._step("STARTTLS", c.STARTTLS, starttls)
            await self._step("EHLO after STARTTLS", c.EHLO, ehlo)
        if t.user and t.password:
            await self._step("AUTH", c.AUTH, self._auth)
        await self._step("NOOP", c.NOOP, self._noop)
        if rcpt is not None and mail_from is not None:
            await self._send(mail_from, rcpt)

        async def quit_() -> str:
            reply = await client.quit()
            return c.reply_text(reply.code, reply.message)

        await self._step("QUIT", c.NOOP, quit_)

    async def _auth(self) -> str:
        t, client = self.target, self.client
        assert client is not None and t.user is not None and t.password is not None
        offered = [m for m in AUTH_PREFERENCE if m in client.server_auth_methods]
        if not client.supports_extension("auth") or not offered:
            raise c.auth_unsupported(t.host, t.port, tls_mode=t.tls_mode,
                                   offers_auth=client.supports_extension("auth"),
                                   offers_starttls=client.supports_extension("starttls"))
        method = getattr(client, "auth_" + offered[0].replace("-", ""))
        await method(t.user, t.password)
        return f"{offered[0].upper()} as {t.user}"

    async def _noop(self) -> str:
        assert self.client is not None
        reply = await self.client.noop()
        return c.reply_text(reply.code, reply.message)

    async def _send(self, mail_from: str, rcpt: str) -> None:
        client = self.client
        assert client is not None
        msg = EmailMessage()
        msg["From"], msg["To"] = mail_from, rcpt
        msg["Subject"] = "mail-proxy connection test"
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.ehlo_name)
        msg.set_content("This is a test message sent by `mail-proxy accounts test`.\n")

        async def mail() -> str:
            reply = await client.mail(mail_from)
            return c.reply_text(reply.code, reply.message)

        async def rcpt_to() -> str:
            reply = await client.rcpt(rcpt)
            return c.reply_text(reply.code, reply.message)

        async def data() -> str:
            reply = await client.data(msg.as_bytes())
            return c.reply_text(reply.code, reply.message)

        await self._step("MAIL FROM", c.MAIL, mail)
        await self._step("RCPT TO", c.RCPT, rcpt_to)
        await self._step("DATA (test message)", c.DATA, data)


async def probe(target: ProbeTarget, *, timeout: float = 15.0, ehlo_name: str | None = None,
                mail_from: str | None = None, rcpt: str | None = None,
                on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Run every step against ``target``; the probe failed when any step is not ``ok``."""
    name = ehlo_name
    if not name:
        name = await asyncio.to_thread(socket.getfqdn)
    return await Probe(target, timeout=timeout, ehlo_name=name,
                       on_step=on_step).run(mail_from=mail_from, rcpt=rcpt)
