"""The audit trail of state-changing requests and CLI commands (api.md §8, data.md §2.6).

What is written is cleaned first: secret values become ``"***"``, big base64 attachment
content becomes ``"base64:<elided N bytes>"``, and a payload or response body still larger
than 64 KiB is cut to a marked prefix, so one 25 MiB batch cannot bloat the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any
from urllib.parse import unquote

from mail_proxy.errors import BadRequest
from mail_proxy.jsonfast import dumps_lenient, loads_strict
from mail_proxy.manager.core import Core, now
from mail_proxy.manager.fields import INT64_MAX, MAX_EPOCH, query_integer, query_number

MASK = "***"
CAP_BYTES = 64 * 1024
EXPORT_MAX = 100_000
MAX_PAGE = 1000
# Keys whose values are secrets wherever they appear in a body or an answer.
SECRET_KEYS = frozenset({
    "password", "token", "signing_secret", "imap_password", "bounce_imap_password",
    "api_key", "storage_options", "secret", "api_token", "admin_token",
})


BATCH_RECORDED = 20
MAX_DEPTH = 32


# Objects whose every member but these is a credential, whatever a client names it.
_CREDENTIAL_OBJECTS = frozenset({"auth", "client_auth"})
_PUBLIC_MEMBERS = frozenset({"method", "user"})
# Key names that read as secrets even when misspelt or unknown ("passwd", "smtp_token").
_SECRET_PARTS = ("pass", "secret", "token")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]*@")
# Query parameters that carry a credential in presigned and tokenised links (S3's
# X-Amz-Signature and X-Amz-Credential, Azure's sig, GCS's X-Goog-Signature, ?token=,
# ?api_key=): the link works for anyone who reads it until it expires.
_URL_PARAM = re.compile(r"([?&#;])([^=&#;\s]+)=([^&#;\s\]]*)")
_SECRET_PARAM_PARTS = ("sig", "token", "secret", "pass", "key", "credential", "auth")
_SECRET_PARAM_NAMES = frozenset({"code"})  # OAuth's one-time code


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower()
    return name in SECRET_KEYS or any(part in name for part in _SECRET_PARTS)


def _credentials(value: Any) -> Any:
    """An ``auth``-like member: only its method and user are kept."""
    if isinstance(value, dict):
        # a flag ("has_token") says nothing secret and stays, as everywhere else
        return {k: (v if (isinstance(k, str) and k.lower() in _PUBLIC_MEMBERS)
                    or v is None or isinstance(v, bool) else MASK) for k, v in value.items()}
    return value if value is None or isinstance(value, bool) else MASK


def _masked_param(match: re.Match[str]) -> str:
    # names are compared decoded: "X-Amz-%53ignature" is a signature too
    name = unquote(match.group(2)).lower()
    if name in _SECRET_PARAM_NAMES or any(part in name for part in _SECRET_PARAM_PARTS):
        return f"{match.group(1)}{match.group(2)}={MASK}"
    return match.group(0)


def _clean_url(text: str) -> str:
    if "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\1:{MASK}@", text)  # a refused URL keeps no password
    if "?" in text or "#" in text:
        text = _URL_PARAM.sub(_masked_param, text)
    return text


def clean(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with secrets masked and big base64 content elided; what lies
    deeper than ``MAX_DEPTH`` is recorded as a note (no request needs that many levels, and
    the recursion must end well before the interpreter's limit)."""
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if _is_secret_key(key) and item is not None and not isinstance(item, bool):
                # null stays null (a secret was cleared), a flag ("has_password") stays
                out[key] = MASK
            elif isinstance(key, str) and key.lower() in _CREDENTIAL_OBJECTS:
                out[key] = _credentials(item)
            elif isinstance(item, str) and len(item) > CAP_BYTES and (
                    key == "storage_path" or item.startswith("base64:")):
                out[key] = f"base64:<elided {len(item)} bytes>"
            else:
                out[key] = clean(item, depth + 1)
        return out
    if isinstance(value, list):
        return [clean(item, depth + 1) for item in value]
    if isinstance(value, str) and ("://" in value or (value.startswith("/") and "?" in value)):
        return _clean_url(value)  # a URL, or a path with a query (client_sync_path)
    return value


def _capped_json(value: Any) -> str | None:
    if value is None:
        return None
    # orjson: with the standard library this was a twentieth of a single-message enqueue
    raw = dumps_lenient(clean(value))
    if len(raw) <= CAP_BYTES:
        return raw.decode()
    head = raw[: CAP_BYTES - 256].decode("utf-8", errors="ignore")
    return json.dumps({"truncated": True, "size_bytes": len(raw), "text": head})


async def record(core: Core, *, actor: str, endpoint: str, tenant_id: str | None,
                 payload: object, response_status: int | None, response_body: object) -> None:
    """Append one row; a no-op while ``command_log_enabled`` is false, except for the
    change of that setting itself: switching the audit trail off leaves a trace of who did.

    The write joins the store's group commit, so it shares its fsync with concurrent work.
    """
    if not core.settings.command_log_enabled and not (
            isinstance(payload, dict) and "command_log_enabled" in payload):
        return
    row = row_values(actor=actor, endpoint=endpoint, tenant_id=tenant_id, payload=payload,
                     response_status=response_status, response_body=response_body)

    async def write(tx: Any) -> None:
        await tx.execute("command_log_insert", **row)

    await core.store.grouped(write)


def row_values(*, actor: str, endpoint: str, tenant_id: str | None, payload: object,
               response_status: int | None, response_body: object) -> dict[str, Any]:
    """The ``command_log_insert`` parameters, masked and capped, for writing in any
    transaction (enqueue writes its row in the same transaction as the messages)."""
    return {"command_ts": now(), "actor": actor, "endpoint": endpoint, "tenant_id": tenant_id,
            "payload": _capped_json(_trim_batch(payload)), "response_status": response_status,
            "response_body": _capped_json(response_body)}


def _trim_batch(payload: object) -> object:
    """A batch too big for the row's 64 KiB is recorded with its first messages only (and
    how many were left out): cut as text, it would not even be JSON, and masking a
    1,000-message batch would cost more than storing it. A batch that fits is recorded
    whole (message-commands hunt: 25 small messages were recorded as 20); finding out takes
    one orjson pass, 0.1 ms for 1,000 messages of 1 KB."""
    if isinstance(payload, dict) and isinstance(payload.get("messages"), list) \
            and len(payload["messages"]) > BATCH_RECORDED \
            and len(dumps_lenient(payload)) > CAP_BYTES:
        kept = dict(payload)
        kept["messages"] = payload["messages"][:BATCH_RECORDED]
        kept["messages_omitted"] = len(payload["messages"]) - BATCH_RECORDED
        return kept
    return payload


# --- reading -------------------------------------------------------------------------------

def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"parameter '{name}' {message}", code="invalid_parameter",
                      detail={"parameter": name})


def _epoch(name: str, value: object) -> int | None:
    if value is None:
        return None
    value = query_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise _bad(name, "must be a number of seconds since the epoch")
    if abs(value) > MAX_EPOCH:
        raise _bad(name, "is not a plausible time")
    return math.floor(value)


def _limit(value: object) -> int:
    value = query_integer(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE:
        raise _bad("limit", f"must be an integer between 1 and {MAX_PAGE}")
    return value


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"id": last_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        assert isinstance(cursor, str)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last = loads_strict(raw)["id"]
        if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= INT64_MAX:
            raise ValueError(last)
        return last
    except (AssertionError, binascii.Error, ValueError, KeyError, TypeError,
            UnicodeDecodeError):
        raise _bad("cursor", "cannot be decoded") from None


def _like(text: object) -> str | None:
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise _bad("endpoint", "must be a string")
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _filters(tenant_id: object, since: object, until: object) -> dict[str, Any]:
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise _bad("tenant_id", "must be a string")
    return {"tenant_id": tenant_id or None, "since": _epoch("since", since),
            "until": _epoch("until", until)}


async def list_commands(core: Core, *, tenant_id: object = None, since: object = None,
                        until: object = None, endpoint: object = None, limit: object = 100,
                        cursor: object = None) -> dict[str, Any]:
    """GET /command-log: oldest first, ``next_cursor`` null on the last page."""
    size = _limit(limit)
    rows = await core.store.fetch("command_log_page", after_id=decode_cursor(cursor),
                                  endpoint=_like(endpoint), limit=size + 1,
                                  **_filters(tenant_id, since, until))
    more = len(rows) > size
    rows = rows[:size]
    commands = [{"id": r["id"], "command_ts": r["command_ts"], "actor": r["actor"],
                 "endpoint": r["endpoint"], "tenant_id": r["tenant_id"],
                 "payload": _loads(r["payload"]), "response_status": r["response_status"],
                 "response_body": _loads(r["response_body"])} for r in rows]
    return {"commands": commands,
            "next_cursor": encode_cursor(rows[-1]["id"]) if more else None}


async def export_commands(core: Core, *, tenant_id: object = None, since: object = None,
                          until: object = None) -> dict[str, Any]:
    """GET /command-log/export: at most 100 000 rows, oldest first."""
    rows = await core.store.fetch("command_log_page", after_id=0, endpoint=None,
                                  limit=EXPORT_MAX + 1, **_filters(tenant_id, since, until))
    return {"truncated": len(rows) > EXPORT_MAX,
            "commands": [{"endpoint": r["endpoint"], "tenant_id": r["tenant_id"],
                          "payload": _loads(r["payload"]), "command_ts": r["command_ts"]}
                         for r in rows[:EXPORT_MAX]]}


async def purge_commands(core: Core, before: int) -> int:
    """Delete rows older than ``before`` (epoch seconds); returns how many went."""
    cutoff = _epoch("before", before)
    if cutoff is None:
        raise BadRequest("parameter 'before' is required", code="missing_parameter",
                         detail={"parameter": "before"})
    async with core.store.transaction() as tx:
        return await tx.execute("command_log_purge", before=cutoff)
