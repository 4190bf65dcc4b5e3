"""Pooled SMTP delivery (delivery.md §8): one pool per account configuration, per worker.

Concurrency model: everything runs on one event loop, and every change to a pool's state
(idle list, busy count, waiter queue) happens between two ``await`` points, so it is atomic
without an explicit lock and nothing is ever "held" across network I/O. Connections are
opened, checked and closed outside those sections; a slot is reserved *before* the await
that opens it so ``max_connections`` holds under any interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiosmtplib

from mail_proxy.delivery import classify as c
from mail_proxy.delivery.pool_state import AccountPool, NotResent, PooledConn, StaleConnection
from mail_proxy.delivery.smtp_channel import SendResult, SmtpChannel
from mail_proxy.delivery.smtp_target import SmtpTarget
from mail_proxy.errors import DeliveryFailure, PermanentFailure, TransientFailure

log = logging.getLogger("mail_proxy.delivery.smtp")

_AUTH_PREFERENCE = ("cram-md5", "plain", "login")
_HEALTH_TIMEOUT = 5.0
_RSET_TIMEOUT = 5.0
_QUIT_TIMEOUT = 2.0
_STALE_RETRIES = 5
# Failures after which the session state is unknown: never reuse the connection.
_BROKEN_CODES = frozenset({"timeout", "connection_failed", "throttled"})
__all__ = ["NotResent", "SendResult", "SmtpPools", "SmtpTarget"]


class SmtpPools:
    """All SMTP connection pools of one worker."""

    def __init__(self, *, ehlo_name: str, connect_timeout: float = 15,
                 send_timeout: float = 30, idle_timeout: float = 60,
                 health_check_after: float = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ehlo_name = ehlo_name
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._idle_timeout = idle_timeout
        self._health_after = health_check_after
        self._clock = clock
        self._pools: dict[tuple[Any, ...], AccountPool] = {}
        self._retired: set[AccountPool] = set()  # replaced pools that still have busy connections
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- public API ---------------------------------------------------------------------

    def configure(self, *, connect_timeout: float, send_timeout: float, idle_timeout: float,
                  health_check_after: float, ehlo_name: str | None = None) -> None:
        """New timeouts and EHLO name from changed settings; open connections keep their
        lifetime and the name they greeted with."""
        if ehlo_name is not None:
            self._ehlo_name = ehlo_name
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._idle_timeout = idle_timeout
        self._health_after = health_check_after

    async def send(self, target: SmtpTarget, mail_from: str, rcpts: list[str],
                   data: bytes, *, released: Callable[[], None] | None = None,
                   may_resend: Callable[[], bool] | None = None) -> SendResult:
        """One transaction on a pooled connection; raises a classified DeliveryFailure.

        ``released`` is called once the connection is free for another transaction: with
        PIPELINING that is as soon as the message is written, before its final reply, so
        the next message's envelope travels while the server is still accepting this one.
        ``may_resend`` is asked before a transaction lost with a stale connection goes again
        on a new one; when it says no, NotResent is raised.
        """
        if self._closed:
            raise TransientFailure("SMTP pools are shut down", code="connection_failed")
        # A server that closes after its 250 (a limit of messages per session) hangs up on
        # the envelope pipelined behind it; nothing of this message reached it, so it goes
        # again on another connection instead of costing an attempt (QA hunt: one message
        # in two burnt an attempt and a retry delay). In a burst it can be pipelined behind
        # another last message again; each such loss is another message's session ending,
        # and the bound only guards against a server that does something stranger.
        for _ in range(_STALE_RETRIES):
            try:
                return await self._send(target, mail_from, rcpts, data, released=released,
                                        retry_stale=True)
            except StaleConnection:
                # The session may have ended with a throttle reply to the message before
                # (421 "slow down" and a hang-up): a resend at once would go out inside the
                # pause the server just asked for (delivery hunt).
                if may_resend is not None and not may_resend():
                    raise NotResent from None
                continue
        return await self._send(target, mail_from, rcpts, data, released=released,
                                retry_stale=False)

    async def _send(self, target: SmtpTarget, mail_from: str, rcpts: list[str], data: bytes,
                    *, released: Callable[[], None] | None, retry_stale: bool) -> SendResult:
        pool = self._pool_for(target)
        conn = await self._acquire(pool, target)
        # gmp_send_seconds starts here, "from connection acquired" (metrics.md): connecting
        # and the greeting are not the transaction (metrics hunt)
        started = time.perf_counter()
        reusable = False
        handed = False
        over = False  # the transaction reached its final reply (or the session is gone)
        channel = conn.client
        channel.reply_timeout = self._send_timeout
        try:
            conn.transactions += 1
            try:
                pending = await channel.begin(mail_from, rcpts, data)
            except DeliveryFailure as failure:
                failure.recipients_accepted = channel.recipients_accepted
                raise
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                if retry_stale and conn.transactions > 1 and channel.stage == c.MAIL:
                    raise StaleConnection from exc
                classified = self._classify(exc, target, channel.stage, self._send_timeout)
                classified.recipients_accepted = channel.recipients_accepted
                raise classified from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                classified = self._classify(exc, target, channel.stage, self._send_timeout)
                classified.recipients_accepted = channel.recipients_accepted
                raise classified from exc
            if channel.pipelining:
                handed = True
                self._release(pool, conn, reusable=True)
                if released is not None:
                    released()
            over = True
            try:
                outcome = await channel.finish(pending)
            except DeliveryFailure as failure:
                failure.recipients_accepted = True
                # The transaction is over whatever the reply said (no RSET needed); a server
                # that asked us to slow down loses this connection, unless it was already
                # handed on (PIPELINING): the transaction written after this one then ends
                # on it, rather than failing as "connection lost" at the cost of an attempt,
                # and a throttle reply to it counts as the same slow-down (sender.py).
                reusable = failure.code not in _BROKEN_CODES
                raise
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                if handed:
                    self._drop_handed(pool, conn)  # no final reply: session state unknown
                classified = self._classify(exc, target, c.DATA, self._send_timeout)
                classified.recipients_accepted = True  # and the whole message written
                raise classified from exc
            except asyncio.CancelledError:
                if handed:
                    self._drop_handed(pool, conn)
                raise
            reusable = True
            outcome.seconds = time.perf_counter() - started
            return outcome
        except DeliveryFailure as failure:
            failure.transaction_seconds = time.perf_counter() - started
            if not over and failure.code not in _BROKEN_CODES and channel.is_connected:
                reusable = await self._rset(conn)  # end the half-done transaction
            raise
        finally:
            if not handed:
                self._release(pool, conn, reusable=reusable)

    def stats(self) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        for pool in [*self._pools.values(), *self._retired]:
            entry = out.setdefault(pool.account, {"idle": 0, "busy": 0})
            entry["idle"] += len(pool.idle)
            entry["busy"] += pool.busy
        return out

    async def reap_idle(self) -> None:
        """Close idle connections unused for ``idle_timeout`` or older than their lifetime."""
        now = self._clock()
        stale: list[PooledConn] = []
        for pool in list(self._pools.values()):
            keep = []
            for conn in pool.idle:
                if (now - conn.last_used > self._idle_timeout
                        or now - conn.created >= pool.target.max_lifetime):
                    stale.append(conn)
                else:
                    keep.append(conn)
            pool.idle = keep
            self._fill_waiters(pool)
        await asyncio.gather(*(self._quit(conn) for conn in stale))

    async def run_reaper(self, interval: float = 15.0) -> None:
        """Reap forever (delivery.md §8.2: every 15 s); cancel the task to stop it."""
        while not self._closed:
            await asyncio.sleep(interval)
            await self.reap_idle()

    async def discard(self, tenant_id: str, account_id: str) -> None:
        """The account changed or was deleted: idle connections now, busy ones on release."""
        doomed = [p for p in self._pools.values() if p.account == (tenant_id, account_id)]
        idle: list[PooledConn] = []
        for pool in doomed:
            idle.extend(self._retire(pool))
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    async def close(self) -> None:
        """Shutdown: QUIT idle connections (2 s each, concurrently); busy ones on release."""
        self._closed = True
        idle: list[PooledConn] = []
        for pool in list(self._pools.values()):
            idle.extend(self._retire(pool))
        for pool in list(self._retired):
            self._fail_waiters(pool)
        await asyncio.gather(*(self._quit(conn) for conn in idle))
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- pool bookkeeping (synchronous: atomic on the event loop) -----------------------

    def _pool_for(self, target: SmtpTarget) -> AccountPool:
        key = target.pool_key
        pool = self._pools.get(key)
        if pool is None:
            for other in [p for p in self._pools.values()
                          if p.account == (target.tenant_id, target.account_id)]:
                for conn in self._retire(other):
                    self._spawn_quit(conn)
            pool = self._pools[key] = AccountPool(target)
        else:
            pool.target = target  # sizing and lifetime follow the latest configuration
            self._fill_waiters(pool)
        return pool

    def _retire(self, pool: AccountPool) -> list[PooledConn]:
        """Take the pool out of service; returns its idle connections for closing."""
        self._pools.pop(pool.key, None)
        pool.retired = True
        idle, pool.idle = pool.idle, []
        if pool.busy or pool.waiters:
            self._retired.add(pool)
        return idle

    def _fill_waiters(self, pool: AccountPool) -> None:
        """Hand free slots to waiters, oldest first; each opens its own connection."""
        if self._closed:
            self._fail_waiters(pool)
            return
        while pool.waiters and pool.open < pool.target.max_connections:
            fut = pool.waiters.popleft()
            if not fut.done():
                pool.busy += 1
                fut.set_result(None)

    def _drop_handed(self, pool: AccountPool, conn: PooledConn) -> None:
        """Close a connection given back before its final reply; if another transaction
        holds it now, that one fails as "connection lost" and is released as broken."""
        conn.client.close()
        if conn in pool.idle:
            pool.idle.remove(conn)
            self._fill_waiters(pool)

    def _fail_waiters(self, pool: AccountPool) -> None:
        while pool.waiters:
            fut = pool.waiters.popleft()
            if not fut.done():
                fut.set_exception(TransientFailure("SMTP pools are shut down",
                                                   code="connection_failed"))

    def _take_idle(self, pool: AccountPool) -> PooledConn | None:
        now = self._clock()
        while pool.idle:
            conn = pool.idle.pop()
            if now - conn.created >= pool.target.max_lifetime or not conn.client.is_connected:
                self._spawn_quit(conn)
                continue
            pool.busy += 1
            return conn
        return None

    def _release(self, pool: AccountPool, conn: PooledConn, *, reusable: bool) -> None:
        now = self._clock()
        keep = (reusable and not pool.retired and not self._closed
                and conn.client.is_connected
                and now - conn.created < pool.target.max_lifetime
                and pool.open <= pool.target.max_connections)
        if keep:
            conn.last_used = now
            while pool.waiters:
                fut = pool.waiters.popleft()
                if not fut.done():
                    fut.set_result(conn)  # direct hand-over keeps waiters FIFO
                    return
            pool.busy -= 1
            pool.idle.append(conn)
            return
        pool.busy -= 1
        if reusable:
            self._spawn_quit(conn)
        else:
            # Session state unknown (failure or cancellation, maybe mid-DATA): a QUIT could
            # be read as message text, so just drop the connection.
            conn.client.close()
        self._fill_waiters(pool)
        if pool.retired and not pool.busy and not pool.waiters:
            self._retired.discard(pool)

    # -- acquiring ----------------------------------------------------------------------

    async def _acquire(self, pool: AccountPool, target: SmtpTarget) -> PooledConn:
        while True:
            conn = self._take_idle(pool)
            if conn is not None:
                if self._clock() - conn.last_used > self._health_after:
                    try:
                        healthy = await self._healthy(conn)
                    except BaseException:  # cancelled mid-NOOP: the session state is unknown
                        self._release(pool, conn, reusable=False)
                        raise
                    if not healthy:
                        pool.busy -= 1
                        self._spawn_quit(conn)
                        self._fill_waiters(pool)
                        continue
                return conn
            if not pool.waiters and pool.open < pool.target.max_connections:
                pool.busy += 1
                return await self._open_reserved(pool, target)
            fut: asyncio.Future[PooledConn | None] = asyncio.get_running_loop().create_future()
            pool.waiters.append(fut)
            try:
                got = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    handed = fut.result()
                    if handed is None:
                        pool.busy -= 1
                        self._fill_waiters(pool)
                    else:
                        self._release(pool, handed, reusable=True)
                else:
                    with contextlib.suppress(ValueError):
                        pool.waiters.remove(fut)
                raise
            if got is None:
                return await self._open_reserved(pool, target)
            return got

    async def _open_reserved(self, pool: AccountPool, target: SmtpTarget) -> PooledConn:
        try:
            client = SmtpChannel.take_over(await self._connect(pool, target))
        except BaseException:
            pool.busy -= 1
            self._fill_waiters(pool)
            raise
        return PooledConn(client, self._clock())

    async def _healthy(self, conn: PooledConn) -> bool:
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                reply = await conn.client.command(b"NOOP")
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        return reply.code == 250

    # -- the SMTP session ---------------------------------------------------------------

    async def _connect(self, pool: AccountPool, target: SmtpTarget) -> aiosmtplib.SMTP:
        """Connect, EHLO, STARTTLS, EHLO, AUTH, all within ``connect_timeout``."""
        host, port = target.host, target.port
        ctx = await pool.tls_context() if target.tls_mode in ("tls", "starttls") else None
        client = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=self._ehlo_name,
                                 timeout=self._connect_timeout,
                                 use_tls=target.tls_mode == "tls", start_tls=False,
                                 tls_context=ctx if target.tls_mode == "tls" else None)
        stage = c.GREETING
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.connect()
                stage = c.EHLO
                await client.ehlo()
                if target.tls_mode == "starttls":
                    stage = c.STARTTLS
                    if not client.supports_extension("starttls"):
                        raise PermanentFailure(f"STARTTLS not offered by {host}:{port}",
                                               code="starttls_unavailable")
                    await client.starttls(tls_context=ctx)
                    stage = c.EHLO
                    await client.ehlo()
                if target.user and target.password:
                    stage = c.AUTH
                    await self._login(pool, client, target)
        except BaseException as exc:
            client.close()
            if isinstance(exc, DeliveryFailure | asyncio.CancelledError):
                raise
            raise self._classify(exc, target, stage, self._connect_timeout) from exc
        client.timeout = self._send_timeout  # MAIL/RCPT/DATA: smtp_send_timeout (§8.1)
        return client

    async def _login(self, pool: AccountPool, client: aiosmtplib.SMTP, target: SmtpTarget) -> None:
        offered = [m for m in _AUTH_PREFERENCE if m in client.server_auth_methods]
        if not client.supports_extension("auth") or not offered:
            raise c.auth_unsupported(target.host, target.port, tls_mode=target.tls_mode,
                                   offers_auth=client.supports_extension("auth"),
                                   offers_starttls=client.supports_extension("starttls"))
        if target.tls_mode == "none" and not pool.warned_plain_auth:
            pool.warned_plain_auth = True
            log.warning("account %s/%s authenticates over an unencrypted connection",
                        target.tenant_id, target.account_id)
        method = getattr(client, "auth_" + offered[0].replace("-", ""))
        assert target.user is not None and target.password is not None
        await method(target.user, target.password)

    def _classify(self, exc: BaseException, target: SmtpTarget, stage: str,
                  timeout: float) -> DeliveryFailure:
        if isinstance(exc, TimeoutError):
            return c.timeout_failure(target.host, target.port, stage, timeout)
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
            return c.reply_failure(stage, exc.code, exc.message, user=target.user)
        tls = c.tls_failure(exc, target.host, target.port)
        if tls is not None:
            return tls
        if isinstance(exc, OSError | aiosmtplib.SMTPException):
            return c.connection_failure(exc, target.host, target.port, stage)
        raise exc

    # -- closing ------------------------------------------------------------------------

    async def _rset(self, conn: PooledConn) -> bool:
        try:
            async with asyncio.timeout(_RSET_TIMEOUT):
                reply = await conn.client.command(b"RSET")
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        return reply.code == 250

    def _spawn_quit(self, conn: PooledConn) -> None:
        task = asyncio.get_running_loop().create_task(self._quit(conn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quit(self, conn: PooledConn) -> None:
        try:
            if conn.client.is_connected:
                async with asyncio.timeout(_QUIT_TIMEOUT):
                    await conn.client.command(b"QUIT")
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass  # the peer is going away anyway
        finally:
            conn.client.close()
