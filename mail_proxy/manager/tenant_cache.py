"""The enqueue path's view of tenants and their accounts, re-read at most once a second.

Validation needs each tenant's state and account list; reading them for every single-message
POST would double the database round trips (docs/decisions/foundation.md).
"""

from __future__ import annotations

import time

from mail_proxy.manager.core import ENQUEUE_TENANTS, Core
from mail_proxy.manager.validation import TenantInfo

# A tenant's configuration is re-read at most this often on the enqueue hot path; a
# deactivated tenant is therefore noticed within this many seconds. A deleted tenant or
# account is caught in the write transaction itself, and a refusal a cached entry may
# explain is checked against a fresh read (manager/enqueue.py).
TENANT_CACHE_SECONDS = 1.0


class TenantCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, TenantInfo | None, dict[str, bool]]] = {}
        self.with_suppressions: set[str] = set()

    async def load(self, core: Core, ids: set[str]) -> tuple[dict[str, TenantInfo],
                                                             dict[tuple[str, str], bool]]:
        stamp = time.monotonic()
        # The entries this call answers with, kept here: while it waits for the database,
        # another request may forget() some of the shared ones (message-commands hunt: a
        # KeyError, and a 500 for a batch naming two tenants, in one request in four).
        chosen = {i: self._entries[i] for i in ids
                  if i in self._entries and stamp - self._entries[i][0] <= TENANT_CACHE_SECONDS}
        missing = set(ids) - chosen.keys()
        if missing:
            # Accounts first: two reads are two snapshots, and a tenant deleted (with its
            # accounts) between them must read as gone, not as a tenant without accounts
            # ("account_required" instead of "tenant_not_found", seen in a race test).
            accounts = await core.store.fetch("enqueue_accounts", ids=sorted(missing))
            rows = await core.store.fetch("enqueue_tenants", ids=sorted(missing))
            by_tenant: dict[str, dict[str, bool]] = {i: {} for i in missing}
            for acc in accounts:
                by_tenant[acc["tenant_id"]][acc["id"]] = bool(acc["is_pec"])
            found = {r["id"]: r for r in rows}
            for tenant_id in missing:
                row = found.get(tenant_id)
                info = None if row is None else TenantInfo(
                    id=tenant_id, active=bool(row["active"]),
                    default_account_id=row["default_account_id"],
                    account_ids=frozenset(by_tenant[tenant_id]),
                    client_base_url=row["client_base_url"])
                self._entries[tenant_id] = chosen[tenant_id] = (stamp, info,
                                                                by_tenant[tenant_id])
                if row is not None and row["suppressions"]:
                    self.with_suppressions.add(tenant_id)
                else:
                    self.with_suppressions.discard(tenant_id)
        tenants: dict[str, TenantInfo] = {}
        pec: dict[tuple[str, str], bool] = {}
        for tenant_id in ids:
            _, info, accs = chosen[tenant_id]
            if info is not None:
                tenants[tenant_id] = info
                for acc_id, is_pec in accs.items():
                    pec[(tenant_id, acc_id)] = is_pec
        return tenants, pec

    def read_before(self, ids: set[str], moment: float) -> bool:
        """Whether any of these tenants comes from a read older than ``moment`` (a
        ``time.monotonic()`` value): answered from the cache, not read for the caller."""
        return any(i in self._entries and self._entries[i][0] < moment for i in ids)

    def forget(self, ids: set[str]) -> None:
        """Read these tenants afresh next time (one of their accounts, or they, went)."""
        for tenant_id in ids:
            self._entries.pop(tenant_id, None)


def tenant_cache(core: Core) -> TenantCache:
    """The cache of one Core (one database): never shared between databases."""
    cache = core.caches.get(ENQUEUE_TENANTS)
    if cache is None:
        cache = core.caches[ENQUEUE_TENANTS] = TenantCache()
    return cache

