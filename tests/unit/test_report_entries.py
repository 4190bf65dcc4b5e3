"""Event rows → report entries, exactly as reports.md §2.1 lists them."""

from __future__ import annotations

import json
from typing import Any

from mail_proxy.reports.entries import entry_for
from mail_proxy.reports.session import encode_body


def row(event_type: str, meta: dict[str, Any] | None = None, description: str | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"id": 77, "message_id": "inv-1", "event_type": event_type, "event_ts": 1767225600,
            "description": description, "metadata": json.dumps(meta or {}),
            "smtp_message_id": "<abc@mx.acme.test>", **extra}


def test_sent_with_extras() -> None:
    refused = [{"address": "x@example.com", "smtp_code": 550, "message": "5.1.1 User unknown"}]
    e = entry_for(row("sent", {"attempt": 1, "smtp_code": 250, "accepted": 1,
                               "refused_recipients": refused}))
    assert e == {"id": "inv-1", "sent_ts": 1767225600, "event_id": 77, "attempt": 1,
                 "smtp_code": 250, "message_id": "<abc@mx.acme.test>",
                 "refused_recipients": refused}


def test_error_keeps_the_failure_text_and_code() -> None:
    e = entry_for(row("error", {"code": "all_recipients_refused", "attempt": 1,
                                "smtp_code": 550}, "550 5.1.1 User unknown"))
    assert e == {"id": "inv-1", "error_ts": 1767225600, "error": "550 5.1.1 User unknown",
                 "event_id": 77, "code": "all_recipients_refused", "attempt": 1,
                 "smtp_code": 550}


def test_cancelled() -> None:
    e = entry_for(row("cancelled", {"code": "cancelled", "cause": "account_deleted"},
                      "cancelled: account 'x' was deleted"))
    assert e == {"id": "inv-1", "error_ts": 1767225600,
                 "error": "cancelled: account 'x' was deleted", "event_id": 77,
                 "code": "cancelled"}


def test_deferred_ts_is_the_event_time_not_the_next_attempt() -> None:
    e = entry_for(row("deferred", {"code": "throttled", "next_attempt_at": 1767225660,
                                   "attempt": 1, "smtp_code": 451}, "451 4.7.1 Try again later"))
    assert e == {"id": "inv-1", "deferred_ts": 1767225600,
                 "deferred_reason": "451 4.7.1 Try again later", "event_id": 77,
                 "code": "throttled", "next_attempt_ts": 1767225660, "attempt": 1,
                 "smtp_code": 451}


def test_rate_limit_deferral_reason() -> None:
    e = entry_for(row("deferred", {"code": "rate_limit", "next_attempt_at": 1767225700},
                      "rate_limit"))
    assert e is not None and e["deferred_reason"] == "rate_limit" and "attempt" not in e


def test_bounce_code_is_a_string_and_reason_is_capped() -> None:
    e = entry_for(row("bounce", {"bounce_type": "hard", "bounce_code": 550,
                                 "bounce_status": "5.1.1", "recipient": "x@example.com",
                                 "source": "dsn"}, "x" * 800))
    assert e is not None
    assert e["bounce_code"] == "550" and e["bounce_type"] == "hard"
    assert len(e["bounce_reason"]) == 500
    assert e["bounce_status"] == "5.1.1" and e["recipient"] == "x@example.com"
    assert e["bounce_ts"] == 1767225600 and "source" not in e


def test_pec_events() -> None:
    e = entry_for(row("pec_error", {"receipt_type": "errore-consegna", "recipient": "a@pec.it",
                                    "pec_timestamp": 1767225500, "error_reason": "no box",
                                    "final": True}, "PEC errore-consegna"))
    assert e == {"id": "inv-1", "pec_event": "pec_error", "pec_ts": 1767225600,
                 "pec_details": {"receipt_type": "errore-consegna", "recipient": "a@pec.it",
                                 "pec_timestamp": 1767225500, "error_reason": "no box",
                                 "final": True}, "event_id": 77}
    t = entry_for(row("pec_timeout", {"receipt_type": None, "waited_seconds": 86400}))
    assert t is not None
    assert t["pec_details"] == {"receipt_type": None, "waited_seconds": 86400}


def test_unknown_type_has_no_entry_and_no_tenant_id_anywhere() -> None:
    assert entry_for(row("queued", {"cause": "retry"})) is None
    body = json.loads(encode_body([row("sent", {"attempt": 1}), row("lease_expired")]))
    assert list(body) == ["delivery_report"] and len(body["delivery_report"]) == 1
    assert all("tenant_id" not in e for e in body["delivery_report"])
