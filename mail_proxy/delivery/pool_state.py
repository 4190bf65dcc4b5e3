"""One account's SMTP pool and its connections: the state SmtpPools (smtp.py) changes
between two ``await`` points, and the exceptions its send loop uses."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from mail_proxy.delivery.smtp_channel import SmtpChannel
from mail_proxy.delivery.smtp_target import SmtpTarget
from mail_proxy.delivery.tls import context_for, warn_insecure
from mail_proxy.errors import PermanentFailure


class PooledConn:
    __slots__ = ("client", "created", "last_used", "transactions")

    def __init__(self, client: SmtpChannel, now: float) -> None:
        self.client = client
        self.created = now
        self.last_used = now
        self.transactions = 0  # begun on it


class StaleConnection(Exception):
    """A reused connection was gone before the server answered this transaction's MAIL."""


class NotResent(Exception):
    """A transaction lost with its stale connection was not tried again, because the caller
    said no (the account was throttled meanwhile): nothing of it reached the server, so the
    message goes back to the queue without an attempt."""


class AccountPool:
    def __init__(self, target: SmtpTarget) -> None:
        self.key = target.pool_key
        self.account = (target.tenant_id, target.account_id)
        self.target = target
        self.idle: list[PooledConn] = []  # most recently used last (LIFO)
        self.busy = 0  # handed out, or reserved while being opened
        self.waiters: deque[asyncio.Future[PooledConn | None]] = deque()
        self.retired = False
        self.warned_plain_auth = False
        self._ctx: ssl.SSLContext | None = None
        self._ctx_lock = asyncio.Lock()
        if target.tls_mode != "none" and not target.tls_verify:
            warn_insecure(target.tenant_id, target.account_id)

    @property
    def open(self) -> int:
        return len(self.idle) + self.busy

    async def tls_context(self) -> ssl.SSLContext:
        # The lock only serialises a one-off file read in a thread, not network I/O.
        async with self._ctx_lock:
            if self._ctx is None:
                try:
                    self._ctx = await context_for(verify=self.target.tls_verify,
                                                  ca_file=self.target.tls_ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise PermanentFailure(
                        f"cannot load TLS CA file {self.target.tls_ca_file!r}: {exc}",
                        code="tls_error") from exc
            return self._ctx
