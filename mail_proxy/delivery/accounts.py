"""Account and tenant configuration as the dispatcher sees it, cached for a few seconds.

delivery.md §3 step 2 allows configuration up to 5 s old, which keeps per-message database
reads off the hot path.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from mail_proxy.delivery.ratelimit import Limits
from mail_proxy.delivery.smtp import SmtpTarget

CONFIG_TTL = 5.0
log = logging.getLogger("mail_proxy.delivery")


@dataclass
class AccountConfig:
    tenant_id: str
    account_id: str
    tenant_active: bool
    suspended_batches: frozenset[str]
    reportable: bool                 # the tenant has a client_base_url
    throttle_level: int
    throttle_until: int | None
    target: SmtpTarget | None        # None when a secret cannot be decrypted
    secret_error: str | None
    limits: Limits
    batch_size: int
    is_pec: bool
    suppression_count: int
    loaded_at: float
    account_pk: int = 0
    read_at: int = 0  # wall-clock second of the read, against the rows' updated_at

    def suspended(self, batch_code: str | None) -> bool:
        return "*" in self.suspended_batches or (
            batch_code is not None and batch_code in self.suspended_batches)

    def throttled(self, now: int) -> bool:
        return self.throttle_until is not None and self.throttle_until > now


class AccountConfigs:
    def __init__(self, core: Any) -> None:
        self.core = core
        self._cache: dict[tuple[str, str], AccountConfig | None] = {}
        self._stamps: dict[tuple[str, str], float] = {}
        # Throttles this worker just met, kept over reloads until the account row says so
        # too (the row is written in the background, after the next send may start).
        self._local_throttle: dict[tuple[str, str], tuple[int, int]] = {}
        # Counts the throttles met per account, so that a send can tell whether one began
        # after it started (pipelined transactions overlap: see Sender._send).
        self._throttle_epochs: dict[tuple[str, str], int] = {}
        self._secret_errors_logged: set[object] = set()

    async def get(self, tenant_id: str, account_id: str, *, fresh: bool = False,
                  row_stamp: tuple[int, int] | None = None) -> AccountConfig | None:
        """The account's configuration, cached for CONFIG_TTL; ``row_stamp`` (the account's
        pk and the latest ``updated_at`` of its row and its tenant's, as the claim cycle
        reads them) makes a cached one that predates a change stale at once: connection
        settings and credentials must not lag behind a change, nor outlive the row."""
        key = (tenant_id, account_id)
        stamp = self._stamps.get(key)
        if not fresh and stamp is not None and time.monotonic() - stamp < CONFIG_TTL:
            cached = self._cache[key]
            if row_stamp is None or (
                    cached is not None and cached.account_pk == row_stamp[0]
                    # same-second changes: a read in the change's second is not trusted
                    and row_stamp[1] < cached.read_at):
                return cached
        row = await self.core.store.fetch_one("dispatch_account_config", tenant_id=tenant_id,
                                              account_id=account_id)
        config = None if row is None else self._build(row)
        local = self._local_throttle.get(key)
        if config is not None and local is not None:
            if (config.throttle_until or 0) >= local[1] or local[1] <= time.time():
                self._local_throttle.pop(key, None)  # the row caught up, or it is over
            else:
                config.throttle_level, config.throttle_until = local
        self._cache[key] = config
        self._stamps[key] = time.monotonic()
        return config

    def cached(self, key: tuple[str, str]) -> AccountConfig | None:
        """The last loaded configuration, without a database read (may be stale)."""
        return self._cache.get(key)

    def forget(self, tenant_id: str | None = None, account_id: str | None = None) -> None:
        if tenant_id is None:  # a reload: a key still missing after it is worth a new line
            self._secret_errors_logged.clear()
        for store in (self._stamps, self._local_throttle):
            for key in list(store):
                if tenant_id is None or (key[0] == tenant_id and account_id in (None, key[1])):
                    store.pop(key, None)

    def throttle_epoch(self, key: tuple[str, str]) -> int:
        return self._throttle_epochs.get(key, 0)

    def set_throttle(self, tenant_id: str, account_id: str, level: int, until: int | None) -> None:
        key = (tenant_id, account_id)
        if until is not None:
            self._local_throttle[key] = (level, until)
            self._throttle_epochs[key] = self._throttle_epochs.get(key, 0) + 1
        config = self._cache.get(key)
        if config is not None:
            config.throttle_level = level
            config.throttle_until = until

    def _log_once(self, row: dict[str, Any], exc: Exception) -> None:
        # Every send of the account fails the same way until the ring is fixed: one line per
        # missing key (or per account for other decryption errors), not one per message.
        what = getattr(exc, "kid", None) or (row["tenant_id"], row["id"])
        if what in self._secret_errors_logged:
            return
        self._secret_errors_logged.add(what)
        log.error("the SMTP password of account %s/%s cannot be decrypted: %s; its sends are "
                  "deferred (secret_unavailable) until it can", row["tenant_id"], row["id"],
                  exc)

    def _build(self, row: dict[str, Any]) -> AccountConfig:
        settings = self.core.settings
        password, secret_error = row["password"], None
        if password:
            try:
                password = self.core.keyring.decrypt(password)
            except Exception as exc:  # a kid missing from the ring: sends fail transiently
                password, secret_error = None, str(exc)
                self._log_once(row, exc)
        target = None if secret_error else SmtpTarget(
            tenant_id=row["tenant_id"], account_id=row["id"], host=row["host"],
            port=int(row["port"]), user=row["username"], password=password,
            tls_mode=row["tls_mode"], tls_verify=bool(row["tls_verify"]),
            tls_ca_file=row["tls_ca_file"],
            max_connections=int(row["max_connections"] or settings.smtp_max_connections),
            max_lifetime=int(row["ttl"] or settings.smtp_max_lifetime))
        tenant_limits = json.loads(row["tenant_rate_limits"]) if row["tenant_rate_limits"] else None
        return AccountConfig(
            tenant_id=row["tenant_id"], account_id=row["id"],
            tenant_active=bool(row["tenant_active"]),
            suspended_batches=frozenset(json.loads(row["suspended_batches"] or "[]")),
            reportable=bool(row["client_base_url"]),
            throttle_level=int(row["throttle_level"] or 0), throttle_until=row["throttle_until"],
            target=target, secret_error=secret_error,
            limits=Limits.from_config(row, tenant_limits),
            batch_size=int(row["batch_size"] or settings.batch_size_per_account),
            is_pec=bool(row["is_pec"]), suppression_count=int(row["suppression_count"] or 0),
            loaded_at=time.monotonic(), account_pk=int(row["pk"]), read_at=int(time.time()))
