"""The per-process context every manager function receives."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mail_proxy.settings import RuntimeSettings
from mail_proxy.store import Store, UniqueViolation, open_store

if TYPE_CHECKING:
    from mail_proxy.security.crypto import KeyRing


@dataclass(frozen=True)
class Principal:
    """Who is acting: the admin token, a tenant API key, or a CLI user."""

    kind: str  # "admin" | "tenant" | "cli"
    tenant_id: str | None = None
    name: str = "admin"

    @property
    def is_tenant(self) -> bool:
        return self.kind == "tenant"

    @property
    def actor(self) -> str:
        return self.name if self.kind == "cli" else self.kind


ADMIN = Principal("admin")


T = TypeVar("T")


async def upsert(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a create-or-replace ``attempt`` (read the row, then insert or update it), once
    more if another writer inserted the same row in between: the second attempt reads it
    and updates. SQLite serialises writers, so only PostgreSQL ever retries."""
    try:
        return await attempt()
    except UniqueViolation:
        return await attempt()


def now() -> int:
    return int(time.time())


ENQUEUE_TENANTS = "enqueue_tenants"  # the key of manager/tenant_cache.py's cache in caches


@dataclass
class Core:
    store: Store
    keyring: KeyRing
    instance_name: str = "mail-proxy"
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)
    settings_version: int = -1
    # Set by the worker so that domain operations can wake its loops; None in the CLI.
    wake_dispatcher: Callable[[str | None], None] | None = None
    # the worker's SMTP pools: an account changed or deleted through this Core closes its
    # idle connections at once (delivery.md §8.1), not a minute later when they time out
    account_changed: Callable[[str, str], None] | None = None
    wake_reporter: Callable[[str | None], None] | None = None
    metrics: Any = None  # mail_proxy.metrics.Metrics in the worker; None in the CLI
    # Short-lived caches of domain modules, per database (never module globals).
    caches: dict[str, Any] = field(default_factory=dict)
    # Called with the new settings whenever they change (a PATCH here, or a reload).
    settings_listeners: list[Callable[[RuntimeSettings], None]] = field(default_factory=list)

    @classmethod
    async def open(cls, db_url: str, keyring: KeyRing, *, name: str = "mail-proxy",
                   pool_size: int = 10, password: str | None = None) -> Core:
        store = open_store(db_url, pool_size=pool_size, password=password)
        await store.open()
        core = cls(store=store, keyring=keyring, instance_name=name)
        try:
            row = await store.fetch_one("instance_get")  # one read for both
            await core._init_instance_secret(row)
            await core.reload_settings(row=row)
        except BaseException:
            await store.close()
            raise
        return core

    async def _init_instance_secret(self, row: dict[str, Any] | None) -> None:
        """data.md §2.7: the first worker or CLI command that opens the database generates
        ``instance_secret``. It also marks the database with this key ring's key, so an
        instance created later on the same PostgreSQL database without that ring is
        refused at its first start (PostgreSQL hunt: it stayed null, and a second instance
        with a key of its own was accepted; each then wrote secrets the other could not
        read)."""
        if row is None or row["instance_secret"] is not None:
            return  # read first: a read-only command must not queue for the write lock
        secret = base64.b64encode(os.urandom(32)).decode("ascii")
        async with self.store.transaction() as tx:
            await tx.execute("instance_secret_init", secret=self.keyring.encrypt(secret))

    async def reload_settings(self, *, force: bool = False,
                              row: dict[str, Any] | None = None) -> bool:
        """Re-read the runtime settings when their version changed (always with ``force``,
        as SIGHUP does: a restored or hand-edited row keeps its version); True if read.
        ``row``: the instance row just read by the caller."""
        if row is None:
            row = await self.store.fetch_one("instance_get")
        if row is None:
            return False
        version = int(row["settings_version"])
        if version == self.settings_version and not force:
            return False
        stored: dict[str, Any] = json.loads(row["settings"] or "{}")
        self.apply_settings(RuntimeSettings.from_stored(stored), version)
        return True

    def apply_settings(self, settings: RuntimeSettings, version: int) -> None:
        self.settings = settings
        self.settings_version = version
        for listener in self.settings_listeners:
            listener(settings)

    async def close(self) -> None:
        await self.store.close()

    def changed(self, tenant_id: str, account_id: str | None = None) -> None:
        """A tenant, one of its accounts or its suppression list was written through this
        Core: its enqueue view is read afresh (not trusted for up to a second), and a
        changed or deleted account's SMTP pools close their idle connections at once."""
        cache = self.caches.get(ENQUEUE_TENANTS)
        if cache is not None:
            cache.forget({tenant_id})
        if account_id is not None and self.account_changed is not None:
            self.account_changed(tenant_id, account_id)

    def wake(self, tenant_id: str | None = None) -> None:
        if self.wake_dispatcher is not None:
            self.wake_dispatcher(tenant_id)
