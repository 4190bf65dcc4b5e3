"""Runtime settings (settings.md §2): stored in the database, shared by every worker.

Only values that differ from the defaults are stored. :func:`validate_changes` checks a whole
change at once so that a bad key never leaves half a change behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mail_proxy.errors import FieldError, ValidationFailed

_HOST_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PRIORITY_LABELS = {"immediate": 0, "high": 1, "medium": 2, "low": 3}
SECRET_SETTINGS = frozenset({"bounce_imap_password"})


@dataclass
class RuntimeSettings:
    # dispatch
    dispatch_enabled: bool = True
    send_loop_interval: float = 0.5
    batch_size_per_account: int = 50
    immediate_batch_size: int = 100
    max_concurrent_sends: int = 20
    lease_seconds: int = 120
    default_priority: int = 2
    message_id_domain: str | None = None
    # retry
    max_retries: int = 5
    retry_delays: list[int] = field(default_factory=lambda: [60, 300, 900, 3600, 7200])
    retry_jitter: float = 0.1
    max_message_age: int = 259200
    # smtp and throttling
    smtp_max_connections: int = 3
    smtp_idle_timeout: int = 60
    smtp_max_lifetime: int = 300
    smtp_health_check_after: int = 30
    smtp_connect_timeout: int = 15
    smtp_send_timeout: int = 30
    throttle_base_delay: int = 60
    throttle_max_delay: int = 1800
    throttle_recovery_successes: int = 20
    # reporting
    reporting_enabled: bool = True
    report_timeout: int = 10
    report_concurrency: int = 8
    report_batch_size: int = 1000
    report_idle_interval: int = 300
    report_max_accelerated: int = 10
    report_backoff_max: int = 300
    report_max_rejections: int = 20
    report_retention_seconds: int = 604800
    # api and limits
    max_batch_messages: int = 1000
    max_request_bytes: int = 26214400
    max_recipients: int = 500
    max_queued_messages: int = 0
    api_requests_per_minute: int = 0
    metrics_public: bool = False
    tenant_can_manage_accounts: bool = True
    command_log_enabled: bool = True
    command_log_retention_days: int = 90
    # attachments
    attachment_roots: list[str] = field(default_factory=list)
    allow_private_urls: bool = False
    attachment_timeout: int = 30
    max_attachment_bytes: int = 26214400
    max_message_attachment_bytes: int = 52428800
    attachment_concurrency: int = 8
    cache_enabled: bool = True
    cache_memory_mb: int = 50
    cache_memory_ttl: int = 300
    cache_disk_mb: int = 500
    cache_disk_ttl: int = 3600
    cache_disk_threshold_kb: int = 100
    # enterprise
    bounce_enabled: bool = False
    bounce_imap_host: str | None = None
    bounce_imap_port: int = 993
    bounce_imap_user: str | None = None
    bounce_imap_password: str | None = None
    bounce_imap_folder: str = "INBOX"
    bounce_imap_tls: bool = True
    bounce_poll_interval: int = 60
    bounce_return_path: str | None = None
    bounce_verp: bool = False
    suppression_enabled: bool = True
    pec_poll_interval: int = 60
    pec_delivery_timeout: int = 86400
    public_base_url: str | None = None
    large_file_fetch_max_mb: int = 500

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> RuntimeSettings:
        """Defaults overlaid with the stored non-default values; unknown keys are ignored
        so that an older worker can read a newer database's settings."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (stored or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """Every setting with secrets shown as ``has_<name>`` booleans (api.md §8)."""
        out = self.as_dict()
        for name in SECRET_SETTINGS:
            out[f"has_{name}"] = out.pop(name) is not None
        return out


DEFAULTS = RuntimeSettings()
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(RuntimeSettings))

# name -> (kind, low, high); kind: bool, int, float, str?, priority, delays, roots, host?, url?,
# address?, secret
_RULES: dict[str, tuple[str, float | None, float | None]] = {
    "dispatch_enabled": ("bool", None, None),
    "send_loop_interval": ("float", 0.05, 60),
    "batch_size_per_account": ("int", 1, 1000),
    "immediate_batch_size": ("int", 1, 10000),
    "max_concurrent_sends": ("int", 1, 1000),
    "lease_seconds": ("int", 30, 3600),
    "default_priority": ("priority", 0, 3),
    "message_id_domain": ("host?", None, None),
    "max_retries": ("int", 0, 50),
    "retry_delays": ("delays", 1, 604800),
    "retry_jitter": ("float", 0, 0.5),
    "max_message_age": ("int", 0, 2592000),
    "smtp_max_connections": ("int", 1, 50),
    "smtp_idle_timeout": ("int", 5, 3600),
    "smtp_max_lifetime": ("int", 30, 3600),
    "smtp_health_check_after": ("int", 0, 3600),
    "smtp_connect_timeout": ("int", 1, 120),
    "smtp_send_timeout": ("int", 1, 600),
    "throttle_base_delay": ("int", 1, 3600),
    "throttle_max_delay": ("int", 1, 86400),
    "throttle_recovery_successes": ("int", 1, 10000),
    "reporting_enabled": ("bool", None, None),
    "report_timeout": ("int", 1, 120),
    "report_concurrency": ("int", 1, 256),
    "report_batch_size": ("int", 1, 10000),
    "report_idle_interval": ("int", 10, 86400),
    "report_max_accelerated": ("int", 0, 1000),
    "report_backoff_max": ("int", 1, 3600),
    "report_max_rejections": ("int", 1, 1000),
    "report_retention_seconds": ("int", 0, 31536000),
    "max_batch_messages": ("int", 1, 10000),
    "max_request_bytes": ("int", 1024, 1073741824),
    "max_recipients": ("int", 1, 10000),
    "max_queued_messages": ("int", 0, None),
    "api_requests_per_minute": ("int", 0, None),
    "metrics_public": ("bool", None, None),
    "tenant_can_manage_accounts": ("bool", None, None),
    "command_log_enabled": ("bool", None, None),
    "command_log_retention_days": ("int", 0, 3650),
    "attachment_roots": ("roots", None, None),
    "allow_private_urls": ("bool", None, None),
    "attachment_timeout": ("int", 1, 600),
    "max_attachment_bytes": ("int", 1, None),
    "max_message_attachment_bytes": ("int", 1, None),
    "attachment_concurrency": ("int", 1, 256),
    "cache_enabled": ("bool", None, None),
    "cache_memory_mb": ("int", 0, 100000),
    "cache_memory_ttl": ("int", 1, 86400),
    "cache_disk_mb": ("int", 0, 1000000),
    "cache_disk_ttl": ("int", 1, 2592000),
    "cache_disk_threshold_kb": ("int", 1, 1048576),
    "bounce_enabled": ("bool", None, None),
    "bounce_imap_host": ("host?", None, None),
    "bounce_imap_port": ("int", 1, 65535),
    "bounce_imap_user": ("str?", None, None),
    "bounce_imap_password": ("secret", None, None),
    "bounce_imap_folder": ("str", None, None),
    "bounce_imap_tls": ("bool", None, None),
    "bounce_poll_interval": ("int", 10, 86400),
    "bounce_return_path": ("address?", None, None),
    "bounce_verp": ("bool", None, None),
    "suppression_enabled": ("bool", None, None),
    "pec_poll_interval": ("int", 10, 86400),
    "pec_delivery_timeout": ("int", 60, 2592000),
    "public_base_url": ("url?", None, None),
    "large_file_fetch_max_mb": ("int", 1, 100000),
}
assert set(_RULES) == set(SETTING_NAMES)


class _Bad(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bound_text(bound: float) -> str:
    """A range bound as written in the docs: 1073741824, not 1.07374e+09."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _range(value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise _Bad("out_of_range", f"must be at least {bound_text(low or 0)}")
        raise _Bad("out_of_range",
                   f"must be between {bound_text(low or 0)} and {bound_text(high)}")


def _int(value: Any) -> int:
    # 90.0 is an integer written by a JSON encoder that knows only floats, as account and
    # tenant integers and message priorities accept it (decisions: validation.md)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("invalid_type", "must be an integer")
    return value


def normalise_setting(name: str, value: Any) -> Any:
    """Return the stored form of one setting value or raise ``_Bad``."""
    kind, low, high = _RULES[name]
    if value is None:
        return None  # restore the default
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad("invalid_type", "must be true or false")
        return value
    if kind == "int":
        v = _int(value)
        _range(v, low, high)
        return v
    if kind == "float":
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value)):
            raise _Bad("invalid_type", "must be a number")
        _range(value, low, high)
        return float(value)
    if kind == "priority":
        if isinstance(value, str) and value.strip().lower() in PRIORITY_LABELS:
            return PRIORITY_LABELS[value.strip().lower()]
        v = _int(value)
        _range(v, low, high)
        return v
    if kind == "delays":
        if not isinstance(value, list) or not 1 <= len(value) <= 20:
            raise _Bad("invalid_value", "must be a list of 1 to 20 delays in seconds")
        out = []
        for item in value:
            v = _int(item)
            _range(v, low, high)
            out.append(v)
        return out
    if kind == "roots":
        if not isinstance(value, list) or len(value) > 100:
            raise _Bad("invalid_value", "must be a list of at most 100 absolute directories")
        for item in value:
            if not isinstance(item, str) or not item.startswith("/") or "\x00" in item:
                # JSON spelling (true, null, 5), as the request wrote it, not Python's repr
                shown = json.dumps(item, ensure_ascii=False)
                raise _Bad("invalid_value", f"{shown} is not an absolute path")
        return list(value)
    if not isinstance(value, str):
        raise _Bad("invalid_type", "must be a string")
    # These end up in headers, SMTP commands and links: a line break or another control
    # character (Python's "$" lets a final newline through) must not get that far.
    if _CONTROL.search(value):
        raise _Bad("invalid_value", "must not contain line breaks or control characters")
    if kind == "host?" and not _HOST_NAME.fullmatch(value):
        raise _Bad("invalid_value", f"{value!r} is not a valid host name")
    if kind == "url?" and not re.fullmatch(r"https?://[^\s/]+\S*", value):
        raise _Bad("invalid_value", "must be an absolute http or https URL")
    if kind == "url?" and "@" in urlsplit(value).netloc:
        # links built on it go into e-mails: credentials would reach every recipient
        raise _Bad("invalid_value", "must not contain a user name or password")
    if kind == "url?" and ("?" in value or "#" in value):
        raise _Bad("invalid_value", "must not carry a query ('?') or fragment ('#'): paths "
                   "are appended to it")
    if kind == "address?" and not re.fullmatch(r"[^\s@<>]+@[^\s@<>]+", value):
        raise _Bad("invalid_address", f"{value!r} is not a bare e-mail address")
    if kind == "str" and not value:
        raise _Bad("invalid_value", "must not be empty")
    return value


def validate_changes(current: dict[str, Any], changes: Any) -> dict[str, Any]:
    """Merge ``changes`` (a PATCH body) into ``current`` (stored non-defaults).

    Returns the new stored dict or raises :class:`ValidationFailed` listing every bad key.
    """
    if not isinstance(changes, dict):
        raise ValidationFailed([FieldError("body", "invalid_type", "must be a JSON object")])
    errors: list[FieldError] = []
    merged = dict(current)
    for name, value in changes.items():
        if name not in _RULES:
            errors.append(FieldError(name, "unknown_field", "is not a setting"))
            continue
        try:
            stored = normalise_setting(name, value)
        except _Bad as bad:
            errors.append(FieldError(name, bad.code, bad.message))
            continue
        if stored is None or stored == getattr(DEFAULTS, name):
            merged.pop(name, None)
        else:
            merged[name] = stored
    effective = RuntimeSettings.from_stored(merged)
    if effective.bounce_enabled and not effective.bounce_imap_host:
        errors.append(FieldError("bounce_imap_host", "required",
                                 "required when bounce_enabled is true"))
    if effective.bounce_verp and not effective.bounce_return_path:
        errors.append(FieldError("bounce_return_path", "required",
                                 "required when bounce_verp is true"))
    if errors:
        raise ValidationFailed(errors)
    return merged
