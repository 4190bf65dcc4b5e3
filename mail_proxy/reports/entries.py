"""Event row → report entry (reports.md §2.1).

The compatible fields come first and are always present; the extra fields are added only
when the event carries them, so that clients of the original protocol see what they expect
and nothing of a missing value is invented. No entry carries ``tenant_id``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("mail_proxy.reports")

PEC_EVENTS = frozenset({"pec_acceptance", "pec_delivery", "pec_error", "pec_timeout"})
BOUNCE_REASON_MAX = 500


def _metadata(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _extras(entry: dict[str, Any], meta: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if meta.get(key) is not None:
            entry[key] = meta[key]


def _sent(base: dict[str, Any], row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    entry = {**base, "sent_ts": row["event_ts"], "event_id": row["id"]}
    _extras(entry, meta, "attempt", "smtp_code")
    if row.get("smtp_message_id"):
        entry["message_id"] = row["smtp_message_id"]
    _extras(entry, meta, "refused_recipients")
    return entry


def _error(base: dict[str, Any], row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    entry = {**base, "error_ts": row["event_ts"], "error": row.get("description") or "",
             "event_id": row["id"]}
    _extras(entry, meta, "code", "attempt", "smtp_code", "refused_recipients")
    return entry


def _cancelled(base: dict[str, Any], row: dict[str, Any],
               meta: dict[str, Any]) -> dict[str, Any]:
    return {**base, "error_ts": row["event_ts"], "error": row.get("description") or "cancelled",
            "event_id": row["id"], "code": "cancelled"}


def _deferred(base: dict[str, Any], row: dict[str, Any],
              meta: dict[str, Any]) -> dict[str, Any]:
    code = meta.get("code")
    reason = "rate_limit" if code == "rate_limit" else (row.get("description") or code or "")
    # deferred_ts is when the deferral happened; the next attempt has its own field.
    entry = {**base, "deferred_ts": row["event_ts"], "deferred_reason": reason,
             "event_id": row["id"]}
    _extras(entry, meta, "code")
    if meta.get("next_attempt_at") is not None:
        entry["next_attempt_ts"] = meta["next_attempt_at"]
    _extras(entry, meta, "attempt", "smtp_code")
    return entry


def _bounce(base: dict[str, Any], row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    code = meta.get("bounce_code")
    reason = row.get("description") or meta.get("bounce_reason") or ""
    entry = {**base, "bounce_ts": row["event_ts"], "bounce_type": meta.get("bounce_type"),
             "bounce_code": None if code is None else str(code),
             "bounce_reason": str(reason)[:BOUNCE_REASON_MAX], "event_id": row["id"]}
    _extras(entry, meta, "bounce_status", "recipient")
    return entry


def _pec(base: dict[str, Any], row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    if row["event_type"] == "pec_timeout":
        details: dict[str, Any] = {"receipt_type": None,
                                   "waited_seconds": meta.get("waited_seconds")}
    else:
        details = {"receipt_type": meta.get("receipt_type"), "recipient": meta.get("recipient"),
                   "pec_timestamp": meta.get("pec_timestamp")}
        for key in ("error_reason", "final"):
            if key in meta:
                details[key] = meta[key]
    return {**base, "pec_event": row["event_type"], "pec_ts": row["event_ts"],
            "pec_details": details, "event_id": row["id"]}


_BUILDERS = {"sent": _sent, "error": _error, "cancelled": _cancelled, "deferred": _deferred,
             "bounce": _bounce, **dict.fromkeys(PEC_EVENTS, _pec)}


def entry_for(row: dict[str, Any]) -> dict[str, Any] | None:
    """The entry for one pending event row, or None for a type that is never reported.

    ``row`` has ``id`` (event id), ``message_id`` (client id), ``event_type``, ``event_ts``,
    ``description``, ``metadata`` (JSON text or dict) and optionally ``smtp_message_id``.
    """
    build = _BUILDERS.get(row["event_type"])
    if build is None:
        log.warning("event %s of type %r is marked reportable but has no report entry; "
                    "acknowledging it without sending", row["id"], row["event_type"])
        return None
    return build({"id": row["message_id"]}, row, _metadata(row.get("metadata")))
