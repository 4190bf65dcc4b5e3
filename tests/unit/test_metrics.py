"""Metrics: names, labels, buckets and exposition format of metrics.md."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mail_proxy.metrics import CONTENT_TYPE, QUEUE_GAUGE_TTL, Metrics

EXPECTED = {
    "gmp_sent": ("counter", {"tenant_id", "account_id"}),
    "gmp_errors": ("counter", {"tenant_id", "account_id"}),
    "gmp_deferred": ("counter", {"tenant_id", "account_id"}),
    "gmp_rate_limited": ("counter", {"tenant_id", "account_id"}),
    "gmp_throttled": ("counter", {"tenant_id", "account_id"}),
    "gmp_suppressed_recipients": ("counter", {"tenant_id"}),
    "gmp_send_seconds": ("histogram", {"tenant_id", "account_id"}),
    "gmp_queue_wait_seconds": ("histogram", {"priority"}),
    "gmp_smtp_connections": ("gauge", {"tenant_id", "account_id", "state"}),
    "gmp_pending_messages": ("gauge", set()),
    "gmp_messages": ("gauge", {"status"}),
    "gmp_oldest_queued_age_seconds": ("gauge", set()),
    "gmp_report_pending_events": ("gauge", {"tenant_id"}),
    "gmp_enqueue_seconds": ("histogram", set()),
    "gmp_enqueued": ("counter", {"tenant_id"}),
    "gmp_rejected": ("counter", {"tenant_id", "code"}),
    "gmp_http_requests": ("counter", {"route", "status"}),
    "gmp_reports": ("counter", {"tenant_id", "outcome"}),
    "gmp_report_seconds": ("histogram", set()),
    "gmp_attachment_fetch": ("counter", {"mode", "outcome"}),
    "gmp_attachment_cache_bytes": ("gauge", {"tier"}),
    "gmp_bounces": ("counter", {"tenant_id", "type"}),
    "gmp_bounces_uncorrelated": ("counter", set()),
    "gmp_pec_events": ("counter", {"tenant_id", "event"}),
    "gmp_large_files": ("counter", {"tenant_id", "action"}),
    "gmp_build_info": ("gauge", {"version", "database"}),
    "gmp_worker_state": ("gauge", {"state"}),
}


def exercise(m: Metrics) -> None:
    acct = {"tenant_id": "t1", "account_id": "a1"}
    for counter in (m.sent_total, m.errors_total, m.deferred_total, m.rate_limited_total,
                    m.throttled_total):
        counter.labels(**acct).inc()
    m.suppressed_recipients_total.labels(tenant_id="t1").inc()
    m.send_seconds.labels(**acct).observe(0.2)
    m.queue_wait_seconds.labels(priority="2").observe(3)
    m.smtp_connections.labels(**acct, state="idle").set(1)
    m.set_queue_gauges({"queued": 1}, 5, {"t1": 2})
    m.enqueue_seconds.observe(0.003)
    m.enqueued_total.labels(tenant_id="t1").inc()
    m.rejected_total.labels(tenant_id="t1", code="invalid_address").inc()
    m.http_requests_total.labels(route="/commands/add-messages", status="200").inc()
    m.reports_total.labels(tenant_id="t1", outcome="ok").inc()
    m.report_seconds.observe(0.05)
    m.bounces_total.labels(tenant_id="t1", type="hard").inc()
    m.bounces_uncorrelated_total.inc()
    m.pec_events_total.labels(tenant_id="t1", event="accettazione").inc()
    m.large_files_total.labels(tenant_id="t1", action="warn").inc()


def families(m: Metrics) -> dict:
    body, content_type = m.render()
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_every_metric_with_its_type_and_labels() -> None:
    m = Metrics(version="1.2.3", database="sqlite")
    exercise(m)
    found = families(m)
    for name, (kind, labels) in EXPECTED.items():
        assert name in found, name
        assert found[name].type == kind, name
        for sample in found[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    for std in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info"):
        assert std in found


def test_no_created_series_and_text_names() -> None:
    m = Metrics(version="1.0.0", database="postgresql")
    exercise(m)
    body = m.render()[0].decode()
    assert "_created" not in body
    assert 'gmp_sent_total{account_id="a1",tenant_id="t1"} 1.0' in body
    assert 'gmp_build_info{database="postgresql",version="1.0.0"} 1.0' in body
    assert "# TYPE gmp_sent_total counter" in body


def test_buckets() -> None:
    m = Metrics(version="1", database="sqlite")
    exercise(m)
    found = families(m)

    def bounds(name: str) -> list[str]:
        return [s.labels["le"] for s in found[name].samples if s.name.endswith("_bucket")]

    assert bounds("gmp_send_seconds") == ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                          "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"]
    assert bounds("gmp_report_seconds") == bounds("gmp_send_seconds")
    assert bounds("gmp_queue_wait_seconds") == ["0.5", "1.0", "2.0", "5.0", "10.0", "30.0",
                                                "60.0", "300.0", "900.0", "3600.0", "21600.0",
                                                "86400.0", "+Inf"]
    assert bounds("gmp_enqueue_seconds")[:3] == ["0.001", "0.0025", "0.005"]
    assert len(bounds("gmp_enqueue_seconds")) == 12


def values(m: Metrics, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in families(m)[name].samples
            if s.name == name or s.name == name + "_total"}


def test_init_accounts_zeroes_counters() -> None:
    m = Metrics(version="1", database="sqlite")
    assert values(m, "gmp_sent") == {}
    m.init_accounts([("t1", "a1"), ("t1", "a2"), ("t2", "a1")])
    sent = values(m, "gmp_sent")
    assert sent == {(("account_id", a), ("tenant_id", t)): 0.0
                    for t, a in [("t1", "a1"), ("t1", "a2"), ("t2", "a1")]}
    assert len(values(m, "gmp_throttled")) == 3
    assert values(m, "gmp_enqueued") == {(("tenant_id", "t1"),): 0, (("tenant_id", "t2"),): 0}
    assert len(values(m, "gmp_reports")) == 10  # 5 outcomes x 2 tenants


def test_queue_gauges_and_state() -> None:
    m = Metrics(version="1", database="sqlite")
    statuses = values(m, "gmp_messages")
    assert len(statuses) == 6 and set(statuses.values()) == {0.0}
    assert m.queue_gauges_stale()
    m.set_queue_gauges({"queued": 3, "deferred": 2, "sending": 1, "sent": 9}, 42,
                       {"t1": 4, "t2": 1})
    assert not m.queue_gauges_stale()
    assert values(m, "gmp_pending_messages") == {(): 6.0}
    assert values(m, "gmp_messages")[(("status", "sent"),)] == 9.0
    assert values(m, "gmp_messages")[(("status", "cancelled"),)] == 0.0
    assert values(m, "gmp_oldest_queued_age_seconds") == {(): 42.0}
    m.set_queue_gauges({}, 0, {"t2": 5})
    assert values(m, "gmp_report_pending_events") == {(("tenant_id", "t1"),): 0.0,
                                                      (("tenant_id", "t2"),): 5.0}
    assert m.queue_gauges_stale(now=10**9 + QUEUE_GAUGE_TTL)

    assert values(m, "gmp_worker_state") == {(("state", "running"),): 1.0}
    m.set_state("stopping")
    assert values(m, "gmp_worker_state") == {(("state", "stopping"),): 1.0}


def test_instances_are_independent() -> None:
    a = Metrics(version="1", database="sqlite")
    b = Metrics(version="1", database="sqlite")
    a.sent_total.labels(tenant_id="t", account_id="x").inc()
    assert values(b, "gmp_sent") == {}
    assert values(a, "gmp_sent") == {(("account_id", "x"), ("tenant_id", "t")): 1.0}
