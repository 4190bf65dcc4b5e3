"""Validation and normalisation of add-messages entries (messages.md §1-2).

Every entry is checked on its own, in the order of messages.md §2 (checks 1-18; check 19,
an id used twice in one request, spans entries: ``batch_validation``); the first failure
rejects that entry only. The resubmission rule (check 20) needs the database and is
applied by the caller inside its write transaction.

Whatever JSON comes in, the only exception that leaves :func:`validate_message` is
:class:`RejectedMessage`: a bad message must never turn a batch into a 500.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any, NoReturn

from mail_proxy.encoded_words import hides_line_break
from mail_proxy.errors import RejectedMessage
from mail_proxy.manager import message_ids
from mail_proxy.manager.addresses import (
    Address,
    address_field,
    address_list_field,
    json_type,
    quote,
)
from mail_proxy.manager.message_ids import message_id_domain
from mail_proxy.manager.priority import parse_priority, resolve_priority

normalise_attachments: Callable[..., list[dict[str, Any]]] | None
try:  # the attachment module is written separately; keep a thin check until it lands
    from mail_proxy.delivery.attachments.validate import normalise_attachments
except ImportError:  # pragma: no cover - depends on the state of the tree
    normalise_attachments = None

__all__ = [
    "TenantInfo",
    "ValidMessage",
    "ValidationContext",
    "message_id_domain",
    "parse_priority",
    "validate_message",
]

_FIELDS = frozenset({
    "id", "tenant_id", "account_id", "from", "from_addr", "to", "cc", "bcc", "reply_to",
    "return_path", "subject", "body", "html", "content_type", "message_id", "headers",
    "priority", "deferred_ts", "batch_code", "attachments"})
_RESERVED = frozenset(name.lower() for name in (
    "From", "To", "Cc", "Bcc", "Subject", "Reply-To", "Date", "Message-ID", "MIME-Version",
    "Content-Type", "Content-Transfer-Encoding", "Return-Path", "X-Mail-Proxy-ID"))
_CONTENT_TYPES = {"plain": "plain", "text/plain": "plain", "html": "html", "text/html": "html"}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")
HIDDEN_BREAK = ("must not hold an encoded word (RFC 2047) that decodes to CR, LF or a control "
                "character")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a value
_MAX_DEFER_SECONDS = 366 * 86400
_MAX_HEADERS = 100
_MAX_ATTACHMENTS = 100
_MESSAGE_ID_MAX = 250  # messages.md §1.1, as message_ids.normalise applies it
# "Lee, Ann <ann@example.com>": an unquoted display name with a comma, which splits the text
# into two addresses ("Lee" and "Ann <ann@example.com>"); the rejection then names "Lee".
_COMMA_IN_NAME = re.compile(r'\s*([^"\\@<>,]+,[^"\\@<>]*?)\s*(<[^<>@]+@[^<>]+>)\s*')


@dataclass(frozen=True)
class TenantInfo:
    id: str
    active: bool
    default_account_id: str | None
    account_ids: frozenset[str]
    client_base_url: str | None
    suppressed: frozenset[str] = frozenset()  # lower-cased addr-specs on its suppression list


@dataclass(frozen=True)
class ValidationContext:
    tenants: Mapping[str, TenantInfo]  # every tenant the batch may name
    settings: Any                      # RuntimeSettings (settings.md §2)
    request_tenant_id: str | None      # body-level tenant_id
    key_tenant_id: str | None          # tenant of the API key, None for the admin
    batch_default_priority: int | None  # already-parsed request default_priority
    now: int

    @cached_property
    def default_priority(self) -> int:
        """Priority of a message that names none, in a request that names none."""
        return resolve_priority(None, self.batch_default_priority, self.settings.default_priority)


@dataclass(frozen=True)
class ValidMessage:
    id: str
    tenant_id: str
    account_id: str
    priority: int
    batch_code: str | None
    deferred_ts: int | None
    smtp_message_id: str  # with angle brackets, given or generated
    payload: dict[str, Any]  # messages.md §1.3
    has_secrets: bool  # an attachment carries credentials: the caller encrypts them


def _shown(value: object) -> str:
    """A client's value for a reason sentence, spelt as in its JSON (``true``, ``null``,
    ``1.5``, ``[]``), not as Python prints it (``True``); strings as :func:`quote` does."""
    if isinstance(value, str):
        return quote(value)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # an integer too long to print (int_max_str_digits)
        return json_type(value)
    return text if len(text) <= 80 else text[:80] + "…"


def reject(code: str, field: str | None, problem: str) -> NoReturn:
    reason = f"'{field}': {problem}" if field is not None else problem
    raise RejectedMessage(code, reason, field)


def _text(entry: dict[str, Any], name: str, *, max_len: int, required: bool) -> str | None:
    """A short single-line text field (id, batch_code): no control characters."""
    value = entry.get(name)
    if value is None:
        if required:
            reject("missing_field", name, "field is required")
        return None
    if not isinstance(value, str):
        reject("invalid_field", name, f"must be a string, not {json_type(value)}")
    if not 1 <= len(value) <= max_len:
        reject("invalid_field", name, f"must be 1-{max_len} characters long")
    if CONTROL.search(value) is not None:
        reject("invalid_field", name, "must not contain control characters")
    return value


def _tenant(entry: dict[str, Any], ctx: ValidationContext) -> TenantInfo:
    own = entry.get("tenant_id")
    if own is not None and (not isinstance(own, str) or not own):
        reject("invalid_field", "tenant_id", "must be a non-empty string")
    tenant_id = own or ctx.request_tenant_id or ctx.key_tenant_id
    if tenant_id is None:
        reject("missing_field", "tenant_id", "field is required (no tenant in the request)")
    if ctx.key_tenant_id is not None and tenant_id != ctx.key_tenant_id:
        # The API refuses such a batch as a whole (api.md §4.1); this guards other callers.
        reject("tenant_mismatch", "tenant_id",
                f"tenant {quote(tenant_id)} is not the tenant of the API key")
    tenant = ctx.tenants.get(tenant_id)
    if tenant is None:
        reject("tenant_not_found", "tenant_id", f"tenant {quote(tenant_id)} does not exist")
    if not tenant.active:
        reject("tenant_inactive", "tenant_id", f"tenant {quote(tenant_id)} is not active")
    return tenant


def _account(entry: dict[str, Any], tenant: TenantInfo) -> str:
    given = entry.get("account_id")
    if given is not None:
        if not isinstance(given, str):
            reject("invalid_field", "account_id", f"must be a string, not {json_type(given)}")
        if given not in tenant.account_ids:
            reject("account_not_found", "account_id",
                    f"account {quote(given)} does not exist for tenant {quote(tenant.id)}")
        return given
    default = tenant.default_account_id
    if default is not None and default in tenant.account_ids:
        return default
    if len(tenant.account_ids) == 1:
        return next(iter(tenant.account_ids))
    if not tenant.account_ids:
        reject("account_required", "account_id", f"tenant {quote(tenant.id)} has no account")
    reject("account_required", "account_id",
            f"tenant {quote(tenant.id)} has {len(tenant.account_ids)} accounts and no default "
            "account; give 'account_id'")


def _sender(entry: dict[str, Any]) -> Address:
    main, alias = entry.get("from"), entry.get("from_addr")
    if main is None and alias is None:
        reject("missing_field", "from", "field is required")
    if main is not None and alias is not None and main != alias:
        a = address_field(main, "from")
        b = address_field(alias, "from_addr")
        if a.normalised != b.normalised:
            reject("conflicting_fields", "from_addr", "differs from 'from'; give one of them")
        return a
    return address_field(main, "from") if main is not None else \
        address_field(alias, "from_addr")


def _subject(entry: dict[str, Any]) -> str:
    value = entry.get("subject")
    if value is None:
        reject("missing_field", "subject", "field is required")
    if not isinstance(value, str):
        reject("invalid_field", "subject", f"must be a string, not {json_type(value)}")
    if not value:
        reject("invalid_field", "subject", "must not be empty")
    if "\r" in value or "\n" in value:
        reject("invalid_field", "subject", "must not contain CR or LF")
    if _HEADER_VALUE_BAD.search(value) is not None:
        reject("invalid_field", "subject", "must not contain control characters")
    if hides_line_break(value):
        reject("invalid_field", "subject", HIDDEN_BREAK)
    if len(value) > 998:
        reject("invalid_field", "subject", "must be at most 998 characters long")
    return value


def _content(entry: dict[str, Any]) -> tuple[str, str | None, str]:
    body, html, kind = entry.get("body"), entry.get("html"), entry.get("content_type")
    for name, value in (("body", body), ("html", html), ("content_type", kind)):
        if value is not None and not isinstance(value, str):
            reject("invalid_field", name, f"must be a string, not {json_type(value)}")
    content_type = "plain"
    if kind is not None:
        found = _CONTENT_TYPES.get(kind.strip().lower())
        if found is None:
            reject("invalid_field", "content_type", f"{quote(kind)} is not 'plain' or 'html'")
        content_type = found
    html = html or None  # an empty alternative is no alternative
    if content_type == "html" and html is not None:
        reject("conflicting_fields", "html",
                "cannot be combined with content_type 'html'; put the HTML in 'body' or "
                "use content_type 'plain'")
    return body or "", html, content_type


def _comma_hint(exc: RejectedMessage, entry: dict[str, Any]) -> RejectedMessage:
    """``exc``, or a copy whose reason explains the usual cause: an unquoted display name
    holding a comma (the text then reads as two addresses and the first is a bare name)."""
    rejection = exc.rejection
    if rejection.code != "invalid_address" or not rejection.field:
        return exc
    name, _, rest = rejection.field.partition("[")
    value = entry.get(name)
    if isinstance(value, list) and rest.endswith("]") and rest[:-1].isdigit() \
            and int(rest[:-1]) < len(value):
        value = value[int(rest[:-1])]
    found = _COMMA_IN_NAME.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        return exc
    return RejectedMessage(rejection.code, f'{rejection.reason}; a display name containing a '
                           f'comma must be quoted: "{found[1]}" {found[2]}', rejection.field)


def _return_path(entry: dict[str, Any]) -> str | None:
    value = entry.get("return_path")
    if value is None:
        return None
    address = address_field(value, "return_path")
    if address.display_name:
        reject("invalid_address", "return_path",
                f"{quote(value)} must be a bare address without a display name")
    return address.addr_spec


def _message_id(entry: dict[str, Any], domain: str) -> str:
    value = entry.get("message_id")
    if value is None:
        return message_ids.generate(domain)
    if not isinstance(value, str):
        reject("invalid_field", "message_id", f"must be a string, not {json_type(value)}")
    text = message_ids.normalise(value)
    if text is None:
        stripped = value.strip()
        # counted as stored: with the angle brackets added when both are missing
        length = len(stripped) + (0 if stripped.startswith("<") or stripped.endswith(">")
                                  else 2)
        if length > _MESSAGE_ID_MAX:
            reject("invalid_field", "message_id",
                    f"is too long: {length} characters with its angle brackets, at most "
                    f"{_MESSAGE_ID_MAX}")
        reject("invalid_field", "message_id",
                f"{quote(value)} is not a Message-ID of the form <left@right>")
    return text


def _header_value(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        reject("invalid_header", field, f"value must be a string or a number, not "
                f"{json_type(value)}")
    if isinstance(value, int):
        if abs(value) >= 10 ** 998:
            reject("invalid_header", field, "value must be at most 998 characters long")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            reject("invalid_header", field, "value must be a finite number")
        text = repr(value)
        # "written in decimal": 1e+20 would read as text in a header, so expand exponents.
        return text if "e" not in text else format(Decimal(text), "f")
    if len(value) > 998:
        reject("invalid_header", field, "value must be at most 998 characters long")
    if _HEADER_VALUE_BAD.search(value) is not None:
        reject("invalid_header", field, "value must not contain CR, LF or control characters")
    if hides_line_break(value):
        reject("invalid_header", field, HIDDEN_BREAK)
    return value


def _headers(entry: dict[str, Any]) -> dict[str, str]:
    raw = entry.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        reject("invalid_header", "headers", f"must be an object, not {json_type(raw)}")
    if len(raw) > _MAX_HEADERS:
        reject("invalid_header", "headers", f"at most {_MAX_HEADERS} headers are allowed")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in raw.items():
        field = f"headers.{name}"
        if not isinstance(name, str) or _HEADER_NAME.fullmatch(name) is None:
            reject("invalid_header", field, f"{quote(name)} is not a valid header name")
        if name.lower() in _RESERVED:
            reject("reserved_header", field, f"{name} is set by mail-proxy, not by headers")
        if name.lower() in seen:  # "Sender" and "sender" are one header, given twice
            reject("invalid_header", field, "is given twice (header names ignore case)")
        seen.add(name.lower())
        if value is not None:
            out[name] = _header_value(value, field)
    return out


def _deferred_ts(entry: dict[str, Any], now: int) -> int | None:
    value = entry.get("deferred_ts")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        reject("invalid_field", "deferred_ts", f"must be a number, not {json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        reject("invalid_field", "deferred_ts", "must be a finite number")
    ts = math.floor(value)
    if not 0 <= ts <= now + _MAX_DEFER_SECONDS:
        reject("invalid_field", "deferred_ts",
                "must be epoch seconds, at most 366 days ahead (a past time means now)")
    return ts


def _batch_code(entry: dict[str, Any]) -> str | None:
    code = _text(entry, "batch_code", max_len=64, required=False)
    if code == "*":
        reject("invalid_field", "batch_code", "'*' is reserved for 'every batch'")
    return code


def _fallback_attachments(raw: object) -> list[dict[str, Any]]:
    """Minimal schema check, used only while the attachment module is not installed."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > _MAX_ATTACHMENTS:
        reject("invalid_attachment", "attachments",
                f"must be an array of at most {_MAX_ATTACHMENTS} objects")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        field = f"attachments[{index}]"
        if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) and item[k] for k in ("filename", "storage_path")):
            reject("invalid_attachment", field,
                    "must be an object with non-empty 'filename' and 'storage_path' strings")
        path = item["storage_path"]
        mode = item.get("fetch_mode") or (
            "base64" if path.startswith("base64:") else
            "http_url" if path.startswith(("http://", "https://")) else
            "filesystem" if path.startswith("/") else "endpoint")
        out.append({"filename": item["filename"], "storage_path": path, "fetch_mode": mode,
                    **{k: item.get(k) for k in ("mime_type", "content_md5", "content_id",
                                                "auth")}})
    return out


def _attachments(entry: dict[str, Any], ctx: ValidationContext,
                 tenant: TenantInfo) -> list[dict[str, Any]]:
    raw = entry.get("attachments")
    if normalise_attachments is None:
        return _fallback_attachments(raw)
    return normalise_attachments(raw, settings=ctx.settings,
                                 tenant_base_url=tenant.client_base_url, field="attachments")


def _has_secrets(attachments: list[dict[str, Any]]) -> bool:
    for item in attachments:
        auth = item.get("auth")
        if isinstance(auth, dict) and (auth.get("token") or auth.get("password")):
            return True
    return False


def validate_message(entry: object, index: int, ctx: ValidationContext, *,
                     message_id_domain: str) -> ValidMessage:
    """Checks 1-18 of messages.md §2 for one entry; raises RejectedMessage.

    Runs once per message of a batch (up to 1,000 per request, on the event loop): optional
    fields that are absent skip their helper, and the checks keep the order of the spec,
    which decides the code of a message with several problems.
    """
    if not isinstance(entry, dict):
        reject("invalid_message", None,
                f"message {index} must be a JSON object, not {json_type(entry)}")
    if not _FIELDS.issuperset(entry):
        for key in entry:
            if key not in _FIELDS:
                reject("unknown_field", str(key), "unknown field")
    get = entry.get
    message_id = _text(entry, "id", max_len=255, required=True)
    assert message_id is not None  # required=True
    tenant = _tenant(entry, ctx)
    account_id = _account(entry, tenant)
    try:
        sender = _sender(entry)
        if get("to") is None:
            reject("missing_field", "to", "field is required")
        to = address_list_field(entry, "to")
        cc = address_list_field(entry, "cc") if get("cc") is not None else []
        bcc = address_list_field(entry, "bcc") if get("bcc") is not None else []
        reply_to = address_list_field(entry, "reply_to") if get("reply_to") is not None else []
    except RejectedMessage as exc:
        raise _comma_hint(exc, entry) from None
    if not to:
        reject("missing_field", "to", "at least one recipient is required")
    recipients = {a.addr_spec.lower(): a for a in to}
    if cc or bcc:
        for a in (*cc, *bcc):
            recipients[a.addr_spec.lower()] = a
    limit = ctx.settings.max_recipients
    if len(recipients) > limit:
        reject("too_many_recipients", None,
                f"the message has {len(recipients)} distinct recipients (to, cc and bcc); "
                f"at most {limit} are allowed")
    subject = _subject(entry)
    body, html, content_type = _content(entry)
    return_path = _return_path(entry) if get("return_path") is not None else None
    smtp_message_id = _message_id(entry, message_id_domain)
    headers = _headers(entry) if get("headers") is not None else {}
    priority = get("priority")
    if priority is None and ctx.batch_default_priority is None:
        priority = ctx.default_priority  # parsed once per batch, not once per message
    else:
        try:
            priority = resolve_priority(priority, ctx.batch_default_priority,
                                        ctx.settings.default_priority)
        except ValueError:
            reject("invalid_priority", "priority",
                    f"{_shown(get('priority'))} is not a priority; use 0-3 or immediate, "
                    "high, medium, low")
    deferred_ts = _deferred_ts(entry, ctx.now) if get("deferred_ts") is not None else None
    batch_code = _batch_code(entry) if get("batch_code") is not None else None
    attachments = _attachments(entry, ctx, tenant) if get("attachments") is not None else []
    if tenant.suppressed and ctx.settings.suppression_enabled and all(
            key in tenant.suppressed or f"{a.local}@{a.domain}".lower() in tenant.suppressed
            for key, a in recipients.items()):
        reject("suppressed", None,
                f"every recipient is on the suppression list of tenant {quote(tenant.id)}")
    payload = {
        "from": sender.normalised, "to": [a.normalised for a in to],
        "cc": [a.normalised for a in cc], "bcc": [a.normalised for a in bcc],
        "reply_to": [a.normalised for a in reply_to],
        "return_path": return_path, "subject": subject, "body": body, "html": html,
        "content_type": content_type, "headers": headers, "attachments": attachments}
    return ValidMessage(
        id=message_id, tenant_id=tenant.id, account_id=account_id, priority=priority,
        batch_code=batch_code, deferred_ts=deferred_ts, smtp_message_id=smtp_message_id,
        payload=payload, has_secrets=bool(attachments) and _has_secrets(attachments))
