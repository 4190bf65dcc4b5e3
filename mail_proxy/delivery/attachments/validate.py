"""Enqueue-time attachment checks (messages.md §1.2, §2 check 17); pure, no I/O."""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from mail_proxy.delivery.attachments import modes
from mail_proxy.delivery.attachments.markers import clean_filename, is_md5_hex
from mail_proxy.encoded_words import hides_line_break
from mail_proxy.errors import RejectedMessage
from mail_proxy.manager.fields import Bad, Check, basic_user, bearer_token, secret_text

MAX_ATTACHMENTS = 100
_KEYS = {"filename", "storage_path", "fetch_mode", "mime_type", "content_md5", "content_id", "auth"}
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
# fullmatch, never match with "$": "$" also matches before a final newline ("text/html\n")
_MIME = re.compile(rf"{_TOKEN}/{_TOKEN}")
# printable ASCII: a msg-id cannot carry anything else without SMTPUTF8 (RFC 5322 §3.6.4)
_CONTENT_ID = re.compile(r"[!-;=?-~]{1,200}")
_AUTH_FIELDS = {"none": (), "bearer": ("token",), "basic": ("user", "password")}
# The rules of a tenant's client_auth (manager.fields): what goes into an Authorization
# header must be sendable there, and is bounded like any other secret.
_AUTH_CHECKS: dict[str, Check] = {"token": bearer_token, "user": basic_user,
                                  "password": secret_text(max_len=1024)}


def normalise_attachments(raw: object, *, settings: Any, tenant_base_url: str | None,
                          field: str = "attachments") -> list[dict[str, Any]]:
    """The normalised attachment dicts of messages.md §1.3, or RejectedMessage.

    Filenames are stored as given (marker included) so the fetcher can still read the
    marker's MD5; base64 content is stored canonical and without its prefix.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RejectedMessage("invalid_attachment", f"'{field}' must be a list", field)
    if len(raw) > MAX_ATTACHMENTS:
        raise RejectedMessage(
            "invalid_attachment",
            f"'{field}' has {len(raw)} attachments; at most {MAX_ATTACHMENTS} are allowed", field)
    return [_one(item, f"{field}[{i}]", settings, tenant_base_url) for i, item in enumerate(raw)]


def _bad(code: str, where: str, text: str) -> RejectedMessage:
    return RejectedMessage(code, text, where)


def _one(item: object, where: str, settings: Any, base_url: str | None) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad("invalid_attachment", where, f"'{where}' must be an object")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise _bad("invalid_attachment", f"{where}.{unknown[0]}",
                   f"'{where}' has an unknown field '{unknown[0]}'")
    filename = _filename(item.get("filename"), where)
    label = f"attachment '{clean_filename(filename)}' ({where})"
    storage_path = item.get("storage_path")
    if not isinstance(storage_path, str) or not storage_path:
        raise _bad("invalid_attachment", f"{where}.storage_path",
                   f"{label}: 'storage_path' must be a non-empty string")
    mode = item.get("fetch_mode")
    if mode is None:
        mode = modes.infer_mode(storage_path)
    elif mode not in modes.MODES:
        raise _bad("invalid_attachment", f"{where}.fetch_mode",
                   f"{label}: 'fetch_mode' must be one of {', '.join(modes.MODES)}")
    out: dict[str, Any] = {
        "filename": filename,
        "storage_path": _source(mode, storage_path, f"{where}.storage_path", label, settings,
                                base_url),
        "fetch_mode": mode,
        "mime_type": _optional(item, "mime_type", where, label, _MIME, "a 'type/subtype' value"),
        "content_md5": _md5(item.get("content_md5"), where, label),
        "content_id": _optional(item, "content_id", where, label, _CONTENT_ID,
                                "1-200 printable ASCII characters without '<', '>' or "
                                "whitespace"),
        "auth": _auth(item.get("auth"), f"{where}.auth", label),
    }
    if out["content_id"] and hides_line_break(out["content_id"]):
        raise _bad("invalid_attachment", f"{where}.content_id", f"{label}: 'content_id' must "
                   "not hold an encoded word (RFC 2047) that decodes to CR, LF or a control "
                   "character")
    return out


def _filename(value: object, where: str) -> str:
    path = f"{where}.filename"
    if not isinstance(value, str):
        raise _bad("invalid_attachment", path, f"'{path}' must be a string")
    if any(c in value for c in "\r\n/\\"):
        raise _bad("invalid_attachment", path,
                   f"'{path}' must not contain CR, LF, '/' or '\\'")
    if hides_line_break(value):
        raise _bad("invalid_attachment", path, f"'{path}' must not hold an encoded word "
                   "(RFC 2047) that decodes to CR, LF or a control character")
    if not 1 <= len(clean_filename(value)) <= 255:
        raise _bad("invalid_attachment", path,
                   f"'{path}' must have 1-255 characters once the MD5 marker is removed")
    return value


def _source(mode: str, path: str, where: str, label: str, settings: Any,
            base_url: str | None) -> str:
    if mode == modes.BASE64:
        return _base64(path, where, label, settings)
    if mode == modes.FILESYSTEM:
        return _filesystem(path, where, label, settings)
    if mode == modes.HTTP_URL:
        _check_url(path, where, label)
        return path
    if mode == modes.MOUNT:
        mount = path.split(":", 1)[0]
        raise _bad("storage_not_configured", where,
                   f"{label}: storage '{mount}' is not configured for this tenant; send "
                   "fetch_mode 'endpoint' if the path is meant for the tenant endpoint")
    explicit = modes.split_explicit(path)
    if explicit is not None:
        _check_url(explicit[0], where, label)
    elif not base_url:
        raise _bad("endpoint_not_configured", where,
                   f"{label}: endpoint attachments need the tenant's client_base_url")
    return path


def _base64(path: str, where: str, label: str, settings: Any) -> str:
    limit = int(settings.max_attachment_bytes)
    try:
        canonical = modes.canonical_base64(path)
        if modes.decoded_size_bound(canonical) > limit + 2:
            raise OverflowError
        size = len(modes.decode_base64(canonical))
    except ValueError as exc:
        raise _bad("invalid_attachment", where, f"{label}: content {exc}") from None
    except OverflowError:
        size = limit + 1
    if size > limit:
        raise _bad("attachment_too_large", where,
                   f"{label}: content is larger than max_attachment_bytes ({limit})")
    return canonical


def _filesystem(path: str, where: str, label: str, settings: Any) -> str:
    roots = [posixpath.normpath(r) for r in (settings.attachment_roots or [])]
    if not roots:
        raise _bad("filesystem_disabled", where,
                   f"{label}: filesystem attachments are disabled; set attachment_roots")
    if not path.startswith("/"):
        raise _bad("path_not_allowed", where, f"{label}: '{path}' is not an absolute path")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if not any(inside(normal, root) for root in roots):
        raise _bad("path_not_allowed", where,
                   f"{label}: '{path}' is outside every attachment root")
    return normal


def inside(path: str, root: str) -> bool:
    """True when `path` lies strictly below `root` (both already normalised)."""
    if root == "/":
        return path != "/"
    return path.startswith(root.rstrip("/") + "/")


def _check_url(url: str, where: str, label: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise _bad("invalid_attachment", where,
                   f"{label}: '{url}' is not an http or https URL with a host")
    if "@" in parts.netloc:
        # user:password in the URL would be stored and shown with the message, where the
        # 'auth' object is encrypted and masked (as client_base_url refuses it too)
        raise _bad("invalid_attachment", where,
                   f"{label}: the URL must not carry credentials before its host; "
                   "put them in 'auth'")


def _optional(item: dict[str, Any], key: str, where: str, label: str, pattern: re.Pattern[str],
              rule: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _bad("invalid_attachment", f"{where}.{key}", f"{label}: '{key}' must be {rule}")
    return value


def _md5(value: object, where: str, label: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_md5_hex(value):
        raise _bad("invalid_attachment", f"{where}.content_md5",
                   f"{label}: 'content_md5' must be exactly 32 hex digits")
    return value.lower()


def _auth(value: object, where: str, label: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("method") not in _AUTH_FIELDS:
        raise _bad("invalid_attachment", where,
                   f"{label}: 'auth' must be an object with method none, bearer or basic")
    needed = _AUTH_FIELDS[value["method"]]
    extra = sorted(set(value) - {"method", *needed})
    if extra:
        raise _bad("invalid_attachment", f"{where}.{extra[0]}",
                   f"{label}: 'auth' has a field '{extra[0]}' its method does not use")
    for key in needed:
        if not isinstance(value.get(key), str) or not value[key]:
            raise _bad("invalid_attachment", f"{where}.{key}",
                       f"{label}: 'auth.{key}' is required for method {value['method']}")
        try:
            _AUTH_CHECKS[key](value[key])
        except Bad as exc:  # its message never quotes the value: these are secrets
            raise _bad("invalid_attachment", f"{where}.{key}",
                       f"{label}: 'auth.{key}' {exc.items[0][2]}") from None
    return {"method": value["method"], **{k: value[k] for k in needed}}
