"""Database gauges for /metrics, computed at most every 15 s (metrics.md §3)."""

from __future__ import annotations

import time

from mail_proxy.api.state import ApiState


async def refresh_queue_gauges(state: ApiState) -> None:
    metrics = state.metrics
    if metrics is None or not metrics.queue_gauges_stale():
        return
    store = state.core.store
    counts = {r["status"]: int(r["n"]) for r in await store.fetch("queue_gauges")}
    oldest = await store.fetch_value("oldest_queued")
    pending = {r["tenant_id"]: int(r["n"]) for r in await store.fetch("report_pending_counts")}
    age = max(int(time.time()) - int(oldest), 0) if oldest is not None else 0
    metrics.set_queue_gauges(counts, age, pending)
