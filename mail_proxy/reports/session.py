"""One tenant's turn: the calls made to it while this worker holds ``report:<tenant>``.

A turn makes the first call, then keeps calling at once while batches come back full
(draining) or while the client answers ``queued > 0`` (acceleration, capped). Events the
client refused are not sent again in the same turn: the cursor only moves forward.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mail_proxy.errors import NotFound
from mail_proxy.manager.tenants import tenant_for_reports
from mail_proxy.reports import ledger
from mail_proxy.reports.client import (
    CONNECTION_ERROR,
    CallResult,
    ReportClient,
    UnsendableCredential,
    request_headers,
    sync_url,
)
from mail_proxy.reports.entries import entry_for

log = logging.getLogger("mail_proxy.reports")

DND_CAP = 86400
PENDING, IDLE, FORCED = "pending", "idle", "forced"


@dataclass
class TurnResult:
    calls: int = 0
    busy: bool = False  # another worker holds the tenant's lease
    refused_upto: int | None = None  # newest event the client refused that is still pending


def encode_body(events: list[dict[str, Any]]) -> bytes:
    entries = [e for e in (entry_for(row) for row in events) if e is not None]
    # Compact and fixed: the signature covers exactly these bytes.
    return json.dumps({"delivery_report": entries}, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def backoff_seconds(failures: int, cap: int) -> int:
    return int(min(2 ** max(failures - 1, 0), cap))


def dnd_until(next_sync_after: int | None, now: int) -> int | None:
    if next_sync_after is None or next_sync_after <= now:
        return None
    return min(next_sync_after, now + DND_CAP)


class Turn:
    def __init__(self, core: Any, client: ReportClient, owner: str, metrics: Any,
                 stopping: Callable[[], bool]) -> None:
        self.core = core
        self.client = client
        self.owner = owner
        self.metrics = metrics
        self.stopping = stopping

    def _lease_ttl(self) -> int:
        # A call may last up to report_timeout (max 120 s): the lease must outlive it.
        return max(ledger.LEASE_TTL, int(self.core.settings.report_timeout) + 15)

    async def run(self, tenant_id: str, reason: str) -> TurnResult:
        store = self.core.store
        if not await ledger.acquire_lease(store, tenant_id, self.owner, int(time.time()),
                                          self._lease_ttl()):
            return TurnResult(busy=True)  # another worker is calling this tenant
        try:
            return await self._calls(tenant_id, reason)
        finally:
            await ledger.release_lease(store, tenant_id, self.owner)

    async def _calls(self, tenant_id: str, reason: str) -> TurnResult:
        store = self.core.store
        try:
            tenant = await tenant_for_reports(self.core, tenant_id)
        except NotFound:
            return TurnResult()
        if not tenant["active"] or not tenant["client_base_url"]:
            return TurnResult()
        if reason != FORCED and (tenant["report_backoff_until"] or 0) > time.time():
            return TurnResult()  # another worker failed while we were deciding
        failures = int(tenant["report_failures"] or 0)
        out = TurnResult()
        refused: set[int] = set()
        after_id, accelerated = 0, 0
        renewed = time.monotonic()
        while True:
            settings = self.core.settings
            if not settings.reporting_enabled or (out.calls and self.stopping()):
                break
            if time.monotonic() - renewed > self._lease_ttl() / 3:
                if not await ledger.acquire_lease(store, tenant_id, self.owner,
                                                  int(time.time()), self._lease_ttl()):
                    log.warning("report lease of tenant %s was lost; stopping its calls",
                                tenant_id)
                    break
                renewed = time.monotonic()
            limit = int(settings.report_batch_size)
            events = await ledger.pending_batch(store, tenant_id, after_id, limit)
            if not events and out.calls == 0 and reason == PENDING:
                break  # already reported by someone else between the scan and the lease
            result = await self._post(tenant, events)
            out.calls += 1
            if not result.ok:
                # A call someone forced (run-now with a tenant) does not climb the backoff:
                # repeated forcing would push a receiver's next try out to the cap in seconds.
                if reason != FORCED or failures == 0:
                    failures += 1
                delay = backoff_seconds(failures, int(settings.report_backoff_max))
                await ledger.record_failure(store, tenant_id, failures,
                                            math.ceil(time.time() + delay))
                log.warning("report call to tenant %s failed (%s); next try in %d s",
                            tenant_id, result.detail or result.outcome, delay)
                break
            failures = 0
            now = int(time.time())
            answer = result.answer
            ack = await ledger.acknowledge(
                store, tenant_id=tenant_id, events=events, refused_ids=answer.error,
                not_found=answer.not_found, max_rejections=int(settings.report_max_rejections),
                now=now, dnd_until=dnd_until(answer.next_sync_after, now))
            if ack.abandoned and self.metrics is not None:
                self.metrics.reports_total.labels(tenant_id=tenant_id,
                                                  outcome="abandoned").inc(len(ack.abandoned))
            refused.update(ack.refused)
            if events:
                after_id = events[-1]["id"]
            if len(events) >= limit:
                continue  # draining a backlog is not acceleration
            if answer.queued > 0 and accelerated < int(settings.report_max_accelerated):
                accelerated += 1
                continue
            break
        out.refused_upto = max(refused) if refused else None
        return out

    async def _post(self, tenant: dict[str, Any], events: list[dict[str, Any]]) -> CallResult:
        body = encode_body(events)
        timeout = float(self.core.settings.report_timeout)
        built = False
        try:
            headers = request_headers(tenant, body)
        except UnsendableCredential as exc:
            # Stored before such credentials were refused: a failed call like any other
            # (counted, logged once per call, backed off), not an error of the whole turn.
            result = CallResult(outcome=CONNECTION_ERROR, seconds=0.0, detail=str(exc))
        except Exception as exc:
            # The same for anything else that stops the request being built; only the type
            # is logged, because the values involved are the tenant's secrets.
            result = CallResult(outcome=CONNECTION_ERROR, seconds=0.0,
                                detail=f"the request could not be built ({type(exc).__name__})")
        else:
            built = True
            result = await self.client.post(sync_url(tenant), body, headers, timeout,
                                            tenant["id"])
        if self.metrics is not None:
            self.metrics.reports_total.labels(tenant_id=tenant["id"],
                                              outcome=result.outcome).inc()
            if built:  # a call that was never made has no duration
                self.metrics.report_seconds.observe(result.seconds)
        log.debug("report call to tenant %s: %d events, %s", tenant["id"], len(events),
                  result.outcome)
        return result
