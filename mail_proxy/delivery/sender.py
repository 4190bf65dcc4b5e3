"""Sending one claimed message, in the order of delivery.md §3 (steps 2-9)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from mail_proxy.delivery import ratelimit
from mail_proxy.delivery.accounts import AccountConfig, AccountConfigs
from mail_proxy.delivery.compose import AttachmentPart, build_message, envelope
from mail_proxy.delivery.leases import LeaseGuard
from mail_proxy.delivery.outcomes import Claimed, Recorder
from mail_proxy.delivery.pool_state import NotResent
from mail_proxy.delivery.retry import RetryPolicy, expired_text, throttle_delay
from mail_proxy.errors import DeliveryFailure, PermanentFailure, TransientFailure
from mail_proxy.manager.core import now
from mail_proxy.store.errors import StoreUnavailable

log = logging.getLogger("mail_proxy.delivery")
# Messages whose stored payload and attachments add up to more than this are composed in a
# thread so that a large MIME encoding (a big body too) never stalls the event loop.
INLINE_COMPOSE_BYTES = 256 * 1024


def _nothing() -> None:
    return None


class Sender:
    def __init__(self, core: Any, *, configs: AccountConfigs, recorder: Recorder, smtp: Any,
                 fetcher: Any | None, metrics: Any | None,
                 on_event: Callable[[str], None], lease_guard: LeaseGuard | None = None) -> None:
        self.core = core
        self.lease_guard = lease_guard
        self.configs = configs
        self.recorder = recorder
        self.smtp = smtp
        self.fetcher = fetcher
        self.metrics = metrics
        self.on_event = on_event
        self._successes: dict[tuple[str, str], int] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def send(self, msg: Claimed, *,
                   transmitted: Callable[[], None] | None = None) -> None:
        """Deliver ``msg`` and record the outcome; never raises (a bug ends as a retry).

        ``transmitted`` is called once the SMTP transaction is over (or was never started),
        before the outcome is written, so the caller can start the next transaction.
        """
        try:
            await self._send(msg, transmitted or _nothing)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            # The database went away between two steps (the recorder waits it out by
            # itself): nothing says the message was delivered, so it goes back to the
            # queue without an attempt, once the database answers again. Left as it was,
            # the dispatcher would forget it while its row stays `sending`, and the lease
            # renewals of this worker's other messages would keep it there.
            log.warning("database unavailable while sending %s/%s (%s); giving it back",
                        msg.tenant_id, msg.id, exc)
            await self.recorder.released(msg)
        except Exception as exc:  # a bug: logged with traceback, retried as transient
            log.exception("internal error while sending %s/%s", msg.tenant_id, msg.id)
            # the cached configuration only: a database read here could fail in turn
            config = self.configs.cached((msg.tenant_id, msg.account_id))
            try:
                await self._failed(msg, config, TransientFailure(
                    f"internal error: {type(exc).__name__}", code="internal_error"),
                    attempted=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cannot record the internal error of %s/%s; giving it back",
                              msg.tenant_id, msg.id)
                await self.recorder.released(msg)

    async def _account_gone(self, msg: Claimed) -> None:
        """T12. When the tenant went too, its messages went with it and there is nothing
        left to record (the recorder finds the lease gone) or report."""
        tenant = await self.core.store.fetch_one("tenant_fetch_context", tenant_id=msg.tenant_id)
        reportable = bool(tenant and tenant["client_base_url"])
        await self.recorder.error(
            msg, code="account_not_found", attempted=False, smtp_code=None,
            text=f"account '{msg.account_id}' does not exist for tenant '{msg.tenant_id}'")
        self._count("errors_total", msg)
        if reportable:
            self.on_event(msg.tenant_id)

    async def _send(self, msg: Claimed, transmitted: Callable[[], None]) -> None:
        if self.lease_guard is not None and not await self.lease_guard.holds(
                msg.pk, msg.claimed_at, self.core.settings.lease_seconds):
            # Nothing is written: the message is another worker's now (delivery.md §2.6).
            log.warning("message %s/%s not sent here: this worker's lease lapsed (was it "
                        "paused?) and another worker took it", msg.tenant_id, msg.id)
            return
        config = await self.configs.get(msg.tenant_id, msg.account_id)
        if config is not None and msg.account_pk not in (None, config.account_pk):
            config = await self.configs.get(msg.tenant_id, msg.account_id, fresh=True)
        t = now()
        if config is None or msg.account_pk not in (None, config.account_pk):
            # the account the message was claimed for is gone: one created since under the
            # same name (maybe for another customer) is not its account
            await self._account_gone(msg)
            return
        if not config.tenant_active or config.suspended(msg.batch_code) or config.throttled(t):
            # The claim saw a fresher state than this cache (e.g. a batch was just activated):
            # re-read before giving the message back, or it would be claimed again at once.
            config = await self.configs.get(msg.tenant_id, msg.account_id, fresh=True)
            if config is None or not config.tenant_active or config.suspended(msg.batch_code) \
                    or config.throttled(t):
                await self.recorder.released(msg)
                return
        if config.target is None:
            await self._failed(msg, config, TransientFailure(
                f"a stored secret of account '{msg.account_id}' cannot be decrypted: "
                f"{config.secret_error}", code="secret_unavailable"), attempted=True)
            return
        payload = json.loads(msg.payload)
        # enterprise.md §3.4: bounces of messages without their own return_path go to the
        # bounce mailbox (VERP tags are not in this version: the address is used as it is)
        mail_from, rcpts = envelope(payload,
                                    bounce_return_path=self.core.settings.bounce_return_path)
        rcpts, suppressed = await self._suppress(msg, config, rcpts)
        if not rcpts:
            await self.recorder.error(msg, code="suppressed", attempted=False, smtp_code=None,
                                      text="every recipient is on the suppression list",
                                      extra={"refused_recipients": suppressed})
            self._count("errors_total", msg)
            self._notify(config, msg)
            return
        reservation = await ratelimit.reserve(self.core.store, msg.tenant_id, msg.account_id,
                                              msg.pk, config.limits, t)
        if reservation.gone:
            if await self.configs.get(msg.tenant_id, msg.account_id, fresh=True) is None:
                await self._account_gone(msg)
            else:  # deleted and created again in between: the next claim sees it afresh
                await self.recorder.released(msg)
            return
        if not reservation.granted:
            await self._rate_limited(msg, config, reservation)
            return
        sent = False
        late_throttle = False
        try:
            data = await self._compose(msg, config, payload)
            key = (msg.tenant_id, msg.account_id)
            epoch = self.configs.throttle_epoch(key)
            try:
                result = await self.smtp.send(
                    config.target, mail_from, rcpts, data, released=transmitted,
                    may_resend=lambda: self.configs.throttle_epoch(key) == epoch)
            except DeliveryFailure as failure:
                # With PIPELINING the next transaction starts before this one's final reply:
                # a throttle reply to a transaction that was already under way when another
                # one throttled the account is the same "slow down", not a second one.
                late_throttle = failure.throttle and self.configs.throttle_epoch(key) != epoch
                if not late_throttle:
                    self._observed(config, failure)
                self._timed(msg, failure.transaction_seconds)  # refused, throttled too
                raise
            else:
                self._observed(config, None)
                self._timed(msg, result.seconds)
            finally:
                transmitted()
            sent = True
        except DeliveryFailure as failure:
            # a recipient accepted: the message may have arrived (a lost final reply), so
            # the slot is used; giving it back let a slow server get the limit many times
            sent = failure.recipients_accepted
            await self._failed(msg, config, failure, attempted=True, escalate=not late_throttle)
            return
        except NotResent:
            # throttled while this message waited behind the throttled one: held messages
            # of a throttled account are given back (delivery.md §7, T7)
            await self.recorder.released(msg)
            return
        finally:
            await self._settle(msg, reservation, sent)
        await self.recorder.sent(msg, smtp_code=result.smtp_code, accepted=len(result.accepted),
                                 refused=suppressed + result.refused)
        self._count("sent_total", msg)
        if self.metrics is not None:
            self.metrics.child("queue_wait_seconds", str(msg.priority)).observe(
                max(now() - msg.not_before, 0))
        self._notify(config, msg)

    def _timed(self, msg: Claimed, seconds: float | None) -> None:
        """gmp_send_seconds of a transaction; none when no connection was acquired (a
        refused connection is not a transaction)."""
        if self.metrics is not None and seconds is not None:
            self.metrics.child("send_seconds", msg.tenant_id, msg.account_id).observe(seconds)

    async def _settle(self, msg: Claimed, reservation: ratelimit.Reservation,
                      sent: bool) -> None:
        try:
            await ratelimit.settle(self.core.store, reservation, sent)
        except StoreUnavailable as exc:
            # Recording the outcome matters more (a delivered message must not go back to
            # the queue): a slot left reserved counts as sent until it ages out
            # (delivery.md §6), which errs on the side of the limit.
            log.warning("rate slot of %s/%s not settled (%s); it counts as used",
                        msg.tenant_id, msg.id, exc)

    async def _suppress(self, msg: Claimed, config: AccountConfig, rcpts: list[str]
                        ) -> tuple[list[str], list[dict[str, Any]]]:
        """messages.md §4.3: drop suppressed recipients at send time (one query, and only
        for tenants that have a suppression list at all)."""
        if not config.suppression_count:
            return rcpts, []
        from mail_proxy.manager.suppressions import suppressed_among

        blocked = await suppressed_among(self.core, msg.tenant_id, rcpts)
        if not blocked:
            return rcpts, []
        if self.metrics is not None:
            self.metrics.suppressed_recipients_total.labels(msg.tenant_id).inc(
                sum(1 for r in rcpts if r.lower() in blocked))
        kept = [r for r in rcpts if r.lower() not in blocked]
        refused = [{"address": r, "smtp_code": None, "message": "suppressed"}
                   for r in rcpts if r.lower() in blocked]
        return kept, refused

    async def _compose(self, msg: Claimed, config: AccountConfig,
                       payload: dict[str, Any]) -> bytes:
        parts: list[AttachmentPart] = []
        raw_attachments = payload.get("attachments") or []
        if raw_attachments:
            if self.fetcher is None:
                raise PermanentFailure("attachments are not supported by this worker",
                                       code="attachment_error")
            attachments = [self._decrypt_auth(a) for a in raw_attachments]
            fetched = await self.fetcher.fetch_all(
                await self._fetch_context(msg, attachments), attachments)
            parts = [AttachmentPart(filename=f.filename, content=f.content, mime_type=f.mime_type,
                                    content_id=f.content_id) for f in fetched]
        build = functools.partial(build_message, payload, client_id=msg.id,
                                  smtp_message_id=msg.smtp_message_id,
                                  date_ts=msg.not_before, attachments=parts)
        if len(msg.payload) + sum(len(p.content) for p in parts) > INLINE_COMPOSE_BYTES:
            return await asyncio.to_thread(build)
        return build()

    def _decrypt_auth(self, attachment: dict[str, Any]) -> dict[str, Any]:
        auth = attachment.get("auth")
        if isinstance(auth, str):
            try:
                return {**attachment, "auth": self.core.keyring.decrypt_json(auth)}
            except Exception as exc:
                raise TransientFailure(f"attachment '{attachment.get('filename')}': its "
                                       f"credentials cannot be decrypted ({exc})",
                                       code="secret_unavailable") from exc
        return attachment

    async def _fetch_context(self, msg: Claimed, attachments: list[dict[str, Any]]) -> Any:
        from mail_proxy.delivery.attachments.fetcher import TenantFetchContext

        row = await self.core.store.fetch_one("tenant_fetch_context", tenant_id=msg.tenant_id)
        auth = None
        # Only endpoint fetches use the tenant's credentials: a message with base64, file or
        # URL attachments must not fail because they cannot be decrypted (attachment hunt:
        # it ended in internal_error, with a traceback).
        if row and row["client_auth"] and any(a.get("fetch_mode") == "endpoint"
                                              for a in attachments):
            try:
                auth = self.core.keyring.decrypt_json(row["client_auth"])
            except Exception as exc:
                raise TransientFailure(
                    f"the tenant's client_auth cannot be decrypted ({exc})",
                    code="secret_unavailable") from exc
        return TenantFetchContext(tenant_id=msg.tenant_id,
                                  base_url=row["client_base_url"] if row else None,
                                  attachment_path=(row["client_attachment_path"] if row else None)
                                  or "/mail-proxy/attachments", client_auth=auth,
                                  created_at=row["created_at"] if row else None)

    async def _rate_limited(self, msg: Claimed, config: AccountConfig,
                            reservation: ratelimit.Reservation) -> None:
        self._count("rate_limited_total", msg)
        if reservation.reject:
            await self.recorder.error(msg, code="rate_limit_exceeded", attempted=False,
                                      smtp_code=None,
                                      text="rate limit exceeded for account "
                                           f"'{msg.account_id}'")
            self._count("errors_total", msg)
        else:
            await self.recorder.deferred(msg, next_attempt_at=reservation.free_at or now() + 1,
                                         code="rate_limit", text=None, attempted=False,
                                         smtp_code=None)
            self._count("deferred_total", msg)
        self._notify(config, msg)

    async def _failed(self, msg: Claimed, config: AccountConfig | None,
                      failure: DeliveryFailure, *, attempted: bool,
                      escalate: bool = True) -> None:
        settings = self.core.settings
        t = now()
        if failure.throttle and config is not None:
            await self._throttled(msg, config, failure, t, escalate=escalate)
            return
        policy = RetryPolicy.from_settings(settings)
        decision = policy.decide(attempts=msg.attempts + 1, created_at=msg.created_at,
                                 deferred_ts=msg.deferred_ts, now=t, failure=failure)
        if decision.retry and decision.next_attempt_at is not None:
            await self.recorder.deferred(msg, next_attempt_at=decision.next_attempt_at,
                                         code=decision.code, text=decision.text,
                                         attempted=attempted, smtp_code=failure.smtp_code)
            self._count("deferred_total", msg)
        else:
            extra: dict[str, Any] = {}
            if decision.retries_exhausted:
                extra["retries_exhausted"] = True
            if failure.refused:
                extra["refused_recipients"] = failure.refused
            await self.recorder.error(msg, code=decision.code, text=decision.text,
                                      attempted=attempted, smtp_code=failure.smtp_code, extra=extra)
            self._count("errors_total", msg)
        if config is not None:
            self._notify(config, msg)

    async def _throttled(self, msg: Claimed, config: AccountConfig, failure: DeliveryFailure,
                         t: int, *, escalate: bool = True) -> None:
        settings = self.core.settings
        if escalate or not config.throttled(t):
            async with self.core.store.transaction() as tx:
                row = await tx.fetch_one("account_throttle", tenant_id=msg.tenant_id,
                                         account_id=msg.account_id, now=t,
                                         base=settings.throttle_base_delay,
                                         max_delay=settings.throttle_max_delay)
            level = int(row["throttle_level"]) if row else 1
            until = int(row["throttle_until"]) if row else t + throttle_delay(
                1, settings.throttle_base_delay, settings.throttle_max_delay)
            self.configs.set_throttle(msg.tenant_id, msg.account_id, level, until)
        else:  # the pause already set covers this message too
            until = int(config.throttle_until or t)
        if self.metrics is not None:
            self.metrics.throttled_total.labels(msg.tenant_id, msg.account_id).inc()
        if failure.refused and until > t:
            # The server slowed us down over this message's recipients (a mailbox's own rate
            # limit, "450 ... rate limit" to RCPT), not the connection: the account pauses
            # as delivery.md §7 says, but the message waits one pause more, so its account's
            # other messages go first when the pause ends. Deferred only to the pause's end,
            # the oldest message was claimed first after every pause, throttled again, and
            # held the whole account until max_message_age (Postfix interop hunt).
            until += until - t
        age_limit = settings.max_message_age
        if age_limit and until > msg.not_before + age_limit:
            await self.recorder.error(msg, code="expired", attempted=False,
                                      smtp_code=failure.smtp_code,
                                      text=expired_text(age_limit, failure.message))
            self._count("errors_total", msg)
        else:
            await self.recorder.deferred(msg, next_attempt_at=until, code="throttled",
                                         text=failure.message, attempted=False,
                                         smtp_code=failure.smtp_code)
            self._count("deferred_total", msg)
        self._notify(config, msg)

    def _observed(self, config: AccountConfig, failure: DeliveryFailure | None) -> None:
        """Account state that must change before the next transaction of the account
        starts (the send loop moves on while this outcome is still being recorded)."""
        key = (config.tenant_id, config.account_id)
        if failure is None:
            self._recovered(config)
            return
        self._successes.pop(key, None)
        if failure.throttle:
            # Provisional until the account row is updated: held messages of the account
            # are given back (T7) instead of meeting the same throttle reply.
            settings = self.core.settings
            level = min(config.throttle_level + 1, 6)
            self.configs.set_throttle(config.tenant_id, config.account_id, level, now()
                                      + throttle_delay(level, settings.throttle_base_delay,
                                                       settings.throttle_max_delay))

    def _recovered(self, config: AccountConfig) -> None:
        """Lower the throttle level after enough consecutive successes (delivery.md §7)."""
        if config.throttle_level <= 0:
            return
        key = (config.tenant_id, config.account_id)
        self._successes[key] = self._successes.get(key, 0) + 1
        if self._successes[key] >= self.core.settings.throttle_recovery_successes:
            self._successes[key] = 0
            config.throttle_level -= 1
            task = asyncio.get_running_loop().create_task(self._step_down(config))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _step_down(self, config: AccountConfig) -> None:
        try:
            async with self.core.store.transaction() as tx:
                await tx.execute("account_unthrottle_step", tenant_id=config.tenant_id,
                                 account_id=config.account_id, now=now())
        except StoreUnavailable as exc:
            # the stored level stays one step up: the next run of successes tries again
            log.warning("throttle level of %s/%s not lowered (%s)", config.tenant_id,
                        config.account_id, exc)

    def _count(self, name: str, msg: Claimed) -> None:
        if self.metrics is not None:
            self.metrics.child(name, msg.tenant_id, msg.account_id).inc()

    def _notify(self, config: AccountConfig, msg: Claimed) -> None:
        if config.reportable:
            self.on_event(msg.tenant_id)
