"""Prometheus metrics of one worker (spec/metrics.md).

Each process builds one :class:`Metrics`; it owns a private registry, so tests can build as many
as they like and nothing leaks between them. Counters and histograms count what this worker did;
the queue gauges are set from the shared database by whoever calls :meth:`set_queue_gauges`
(at most every :data:`QUEUE_GAUGE_TTL` seconds, see :meth:`Metrics.queue_gauges_stale`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "MESSAGE_STATUSES", "QUEUE_GAUGE_TTL", "Metrics"]

# Pinned: recent prometheus-client advertises 1.0.0 by default, the contract says 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_GAUGE_TTL = 15.0

MESSAGE_STATUSES = ("queued", "deferred", "sending", "sent", "error", "cancelled")
PENDING_STATUSES = ("queued", "deferred", "sending")
WORKER_STATES = ("running", "stopping")
REPORT_OUTCOMES = ("ok", "http_error", "timeout", "connection_error", "abandoned")
ATTACHMENT_MODES = ("base64", "filesystem", "endpoint", "http_url")
ATTACHMENT_OUTCOMES = ("ok", "cache_hit", "transient_error", "permanent_error")
CACHE_TIERS = ("memory", "disk")

SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
QUEUE_WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
ENQUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_ACCOUNT = ("tenant_id", "account_id")

# The flag is process-wide in prometheus-client; every registry of ours wants it off.
disable_created_metrics()


class Metrics:
    """Every metric of metrics.md, registered on a private registry."""

    def __init__(self, *, version: str, database: str) -> None:
        disable_created_metrics()  # again, in case some other code re-enabled it
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, ...], Any] = {}
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        # §2 delivery
        self.sent_total = Counter("gmp_sent_total", "Messages that reached sent.",
                                  _ACCOUNT, registry=r)
        self.errors_total = Counter("gmp_errors_total", "Messages that reached error.",
                                    _ACCOUNT, registry=r)
        self.deferred_total = Counter(
            "gmp_deferred_total", "Messages deferred after a claim (retry, rate limit, throttle).",
            _ACCOUNT, registry=r)
        self.rate_limited_total = Counter(
            "gmp_rate_limited_total", "Refused rate-limit reservations.", _ACCOUNT, registry=r)
        self.throttled_total = Counter("gmp_throttled_total", "SMTP throttle replies.",
                                       _ACCOUNT, registry=r)
        self.suppressed_recipients_total = Counter(
            "gmp_suppressed_recipients_total",
            "Recipients removed at send time by the suppression list.", ("tenant_id",),
            registry=r)
        self.send_seconds = Histogram(
            "gmp_send_seconds", "One SMTP transaction, connection acquired to final reply.",
            _ACCOUNT, buckets=SEND_BUCKETS, registry=r)
        self.queue_wait_seconds = Histogram(
            "gmp_queue_wait_seconds", "From max(created_at, deferred_ts) to sent.",
            ("priority",), buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.smtp_connections = Gauge(
            "gmp_smtp_connections", "Open pooled SMTP connections of this worker.",
            (*_ACCOUNT, "state"), registry=r)

        # §3 queue (database)
        self.pending_messages = Gauge(
            "gmp_pending_messages", "Messages queued, deferred or sending.", registry=r)
        self.messages = Gauge("gmp_messages", "Messages per status.", ("status",), registry=r)
        self.oldest_queued_age_seconds = Gauge(
            "gmp_oldest_queued_age_seconds", "Age of the oldest queued message, 0 when none.",
            registry=r)
        self.report_pending_events = Gauge(
            "gmp_report_pending_events", "Reportable events not yet acknowledged.",
            ("tenant_id",), registry=r)

        # §4 API
        self.enqueue_seconds = Histogram(
            "gmp_enqueue_seconds", "Duration of POST /commands/add-messages.",
            buckets=ENQUEUE_BUCKETS, registry=r)
        self.enqueued_total = Counter("gmp_enqueued_total", "Messages stored by add-messages.",
                                      ("tenant_id",), registry=r)
        self.rejected_total = Counter("gmp_rejected_total", "Messages rejected at enqueue.",
                                      ("tenant_id", "code"), registry=r)
        self.http_requests_total = Counter("gmp_http_requests_total", "API requests.",
                                           ("route", "status"), registry=r)

        # §5 reports and attachments
        self.reports_total = Counter("gmp_reports_total", "Delivery-report calls by outcome.",
                                     ("tenant_id", "outcome"), registry=r)
        self.report_seconds = Histogram("gmp_report_seconds", "Delivery-report call duration.",
                                        buckets=SEND_BUCKETS, registry=r)
        self.attachment_fetch_total = Counter(
            "gmp_attachment_fetch_total", "Attachment resolutions.", ("mode", "outcome"),
            registry=r)
        self.attachment_cache_bytes = Gauge(
            "gmp_attachment_cache_bytes", "Attachment cache size of this worker.", ("tier",),
            registry=r)

        # §6 enterprise
        self.bounces_total = Counter("gmp_bounces_total", "Bounce events recorded.",
                                     ("tenant_id", "type"), registry=r)
        self.bounces_uncorrelated_total = Counter(
            "gmp_bounces_uncorrelated_total", "Bounces that matched no message.", registry=r)
        self.pec_events_total = Counter("gmp_pec_events_total", "PEC events recorded.",
                                        ("tenant_id", "event"), registry=r)
        self.large_files_total = Counter(
            "gmp_large_files_total", "Large-file policy applications.", ("tenant_id", "action"),
            registry=r)

        # §7 process
        self.build_info = Gauge("gmp_build_info", "Always 1; labels describe the build.",
                                ("version", "database"), registry=r)
        self.build_info.labels(version=version, database=database).set(1)
        self.worker_state = Gauge("gmp_worker_state", "Always 1; the label is the state.",
                                  ("state",), registry=r)

        self._queue_updated: float | None = None
        self._reported_tenants: set[str] = set()
        self._zero_fixed_label_sets()
        self.set_state("running")

    def child(self, name: str, *labels: str) -> Any:
        """``getattr(self, name).labels(*labels)``, remembered: the dispatcher touches a
        few children per message, and prometheus-client's lookup takes a lock each time.
        Children are never removed from our registry, so a remembered one stays live."""
        key = (name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = getattr(self, name).labels(*labels)
        return found

    def _zero_fixed_label_sets(self) -> None:
        # Closed label sets are shown from the first scrape so dashboards never see gaps.
        for status in MESSAGE_STATUSES:
            self.messages.labels(status=status).set(0)
        for mode in ATTACHMENT_MODES:
            for outcome in ATTACHMENT_OUTCOMES:
                self.attachment_fetch_total.labels(mode=mode, outcome=outcome)
        for tier in CACHE_TIERS:
            self.attachment_cache_bytes.labels(tier=tier).set(0)

    def init_accounts(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Create the per-account counters at 0 so ``rate()`` works from the first scrape."""
        tenants: set[str] = set()
        for tenant_id, account_id in pairs:
            tenants.add(tenant_id)
            for counter in (self.sent_total, self.errors_total, self.deferred_total,
                            self.rate_limited_total, self.throttled_total):
                counter.labels(tenant_id=tenant_id, account_id=account_id)
        for tenant_id in tenants:
            self.suppressed_recipients_total.labels(tenant_id=tenant_id)
            self.enqueued_total.labels(tenant_id=tenant_id)
            for outcome in REPORT_OUTCOMES:
                self.reports_total.labels(tenant_id=tenant_id, outcome=outcome)

    def set_state(self, state: str) -> None:
        """Show exactly one ``gmp_worker_state`` series, for the current state."""
        if state not in WORKER_STATES:
            raise ValueError(f"unknown worker state {state!r}; expected one of {WORKER_STATES}")
        self.worker_state.clear()
        self.worker_state.labels(state=state).set(1)

    def set_queue_gauges(self, counts: Mapping[str, int], oldest_queued_age: int,
                         pending_events: Mapping[str, int]) -> None:
        """Publish the database gauges; statuses or tenants missing from the maps read 0."""
        for status in MESSAGE_STATUSES:
            self.messages.labels(status=status).set(counts.get(status, 0))
        self.pending_messages.set(sum(counts.get(s, 0) for s in PENDING_STATUSES))
        self.oldest_queued_age_seconds.set(max(0, oldest_queued_age))
        # A tenant that drops out keeps its series (at 0) until restart, as the spec asks.
        for tenant_id in self._reported_tenants - pending_events.keys():
            self.report_pending_events.labels(tenant_id=tenant_id).set(0)
        for tenant_id, count in pending_events.items():
            self.report_pending_events.labels(tenant_id=tenant_id).set(count)
        self._reported_tenants |= set(pending_events)
        self._queue_updated = time.monotonic()

    def queue_gauges_stale(self, now: float | None = None) -> bool:
        """True when the database gauges are older than the 15 s cache (or never set)."""
        if self._queue_updated is None:
            return True
        now = time.monotonic() if now is None else now
        return now - self._queue_updated >= QUEUE_GAUGE_TTL

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE
