"""GET /openapi.json: the OpenAPI 3.1 document, built from the route table (api.md §3).

Each (method, path) of ``routes.ROUTES`` has an :class:`Op` here; :func:`build` fails on a
route without one, so the document cannot silently lose a route. ``docs/api.md`` is
rendered from the same document (``python -m mail_proxy.api.openapi --markdown``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy import __version__


@dataclass(frozen=True)
class Op:
    summary: str
    access: str               # public | any | admin | own | own-accounts[-delete]
    ok: tuple[int, str]       # success status, component schema name
    params: tuple[str, ...] = ()
    body: str | None = None   # component schema name of the JSON body
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=())
    replaces: bool = True     # a 201 route that also answers 200 (create or replace)


ACCESS_TEXT = {
    "public": "public",
    "any": "admin or any tenant key",
    "admin": "admin only (tenant key: 403 admin_required)",
    "own": "admin, or a tenant key for its own tenant",
    "own-accounts-delete": "admin, or a tenant key for its own tenant when "
                           "tenant_can_manage_accounts is true (else 403 admin_required)",
    "own-accounts": "admin, or a tenant key for its own tenant when "
                    "tenant_can_manage_accounts is true (else 403 admin_required); "
                    "tls_ca_file is admin only; a tenant key may only set public hosts "
                    "unless allow_private_urls is true (else 422 validation_error, field code "
                    "host_not_allowed), and must send password (imap_password) again to "
                    "change host, port, tls_mode or tls_verify (imap_host, imap_port, "
                    "imap_tls) of an account that stores one (else 422, field code "
                    "password_required)",
}
_AUTH_ERRORS = (400, 401, 403, 404, 429, 503)
_BODY_ERRORS = (413, 415, 422)
_TID, _FORCE, _LIMIT, _CURSOR = "tenant_id", "force", "limit", "cursor"

OPS: dict[tuple[str, str], Op] = {
    ("GET", "/health"): Op("Liveness", "public", (200, "Health"), errors=(503,)),
    ("GET", "/status"): Op("Worker status", "any", (200, "Status")),
    ("GET", "/metrics"): Op("Prometheus metrics (public when metrics_public)", "admin",
                            (200, "text")),
    ("GET", "/openapi.json"): Op("This document", "public", (200, "Document")),
    ("GET", "/download/{token}"): Op("Large-file download (not served yet: always 404)",
                                     "public", (200, "binary"), errors=(404, 410)),
    ("POST", "/commands/add-messages"): Op("Queue messages", "own", (200, "AddResult"),
                                           body="AddMessages", errors=(409,)),
    ("POST", "/commands/delete-messages"): Op("Delete messages", "own", (200, "DeleteResult"),
                                              (_TID,), "IdsBody"),
    ("POST", "/commands/retry-messages"): Op("Retry messages", "own", (200, "RetryResult"),
                                             (_TID,), "IdsBody"),
    ("POST", "/commands/cleanup-messages"): Op(
        "Purge settled messages (admin: all tenants when tenant_id is omitted)", "own",
        (200, "Removed"), (_TID, "older_than_seconds"), "CleanupBody"),
    ("POST", "/commands/run-now"): Op("Wake the dispatcher and the reporter", "own",
                                      (200, "Ok"), (_TID,), "TenantBody"),
    ("POST", "/commands/suspend"): Op("Suspend a tenant or one batch", "own",
                                      (200, "Suspension"), (_TID, "batch_code"), "BatchBody"),
    ("POST", "/commands/activate"): Op("Resume a tenant or one batch", "own",
                                       (200, "Suspension"), (_TID, "batch_code"), "BatchBody",
                                       errors=(409,)),
    ("GET", "/messages"): Op("List messages (admin: all tenants when tenant_id is omitted)",
                             "own", (200, "MessageList"),
                             (_TID, "status", "batch_code", _LIMIT, _CURSOR)),
    ("GET", "/messages/{id}"): Op("One message with its payload and events", "own",
                                  (200, "MessageAnswer"), (_TID,)),
    ("GET", "/accounts"): Op("List accounts (admin: all tenants when tenant_id is omitted)",
                             "own", (200, "AccountList"), (_TID,)),
    ("POST", "/account"): Op("Create (201) or replace (200) an account", "own-accounts",
                             (201, "AccountWrite"), (_TID,), "AccountInput"),
    ("GET", "/account/{id}"): Op("One account", "own", (200, "AccountAnswer"), (_TID,)),
    ("PATCH", "/account/{id}"): Op("Change some fields of an account", "own-accounts",
                                   (200, "AccountAnswer"), (_TID,), "AccountPatch"),
    ("DELETE", "/account/{id}"): Op("Delete an account (force cancels its queued messages)",
                                    "own-accounts-delete", (200, "AccountDeleted"),
                                    (_TID, _FORCE),
                                    errors=(409,)),
    ("GET", "/tenants"): Op("List tenants", "admin", (200, "TenantList"), ("active_only",)),
    ("POST", "/tenant"): Op("Create (201, with its API key) or replace (200) a tenant",
                            "admin", (201, "TenantWrite"), body="TenantInput"),
    ("GET", "/tenant/{id}"): Op("One tenant", "own", (200, "TenantAnswer")),
    ("PATCH", "/tenant/{id}"): Op(
        "Change some fields of a tenant (tenant key: name, client_auth, client_sync_path, "
        "client_attachment_path, signing_secret, default_account_id)", "own",
        (200, "TenantAnswer"), body="TenantPatch"),
    ("DELETE", "/tenant/{id}"): Op("Delete a tenant and everything it owns", "admin",
                                   (200, "TenantDeleted"), (_FORCE,), errors=(409,)),
    ("POST", "/tenant/{id}/api-key"): Op("Create a new API key, replacing the old one",
                                         "admin", (201, "ApiKey"), body="ApiKeyBody",
                                         replaces=False),
    ("DELETE", "/tenant/{id}/api-key"): Op("Revoke the API key", "admin", (200, "Revoked")),
    ("GET", "/instance"): Op("Instance and runtime settings", "admin", (200, "Instance")),
    ("PATCH", "/instance"): Op("Change runtime settings (null restores the default)",
                               "admin", (200, "Instance"), body="SettingsPatch"),
    ("GET", "/command-log"): Op("Audit trail of state-changing requests", "admin",
                                (200, "CommandList"),
                                (_TID, "since", "until", "endpoint", _LIMIT, _CURSOR)),
    ("GET", "/command-log/export"): Op("Audit trail export (at most 100 000 rows)", "admin",
                                       (200, "CommandExport"), (_TID, "since", "until")),
    ("GET", "/suppressions"): Op("List suppressed addresses", "own", (200, "SuppressionList"),
                                 (_TID, "address", _LIMIT, _CURSOR)),
    ("POST", "/suppressions"): Op("Suppress an address (201; 200 when already listed)",
                                  "own", (201, "SuppressionAnswer"), (_TID,),
                                  "SuppressionInput"),
    ("DELETE", "/suppressions/{address}"): Op("Remove a suppressed address", "own",
                                              (200, "Removed"), (_TID,)),
}


# --- schemas ---------------------------------------------------------------------------------

ERROR_TEXT = {400: "request cannot be used", 401: "missing, unknown or expired token",
              403: "not allowed for this principal", 404: "route or resource not found",
              409: "conflicts with the current state", 410: "download link expired",
              413: "body larger than max_request_bytes", 415: "body is not JSON",
              422: "fields failed validation (detail lists each)",
              429: "rate_limited or queue_full", 503: "shutting_down or storage_unavailable"}


def headers(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"X-Request-ID": {"required": True, "schema": {"type": "string"},
                                            "description": "echoed or generated request id"}}
    if status in (429, 503):
        out["Retry-After"] = {"required": True, "schema": {"type": "string"}}
    if status == 401:
        out["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
    return out


def _t(*types: str) -> dict[str, Any]:
    return {"type": list(types) if len(types) > 1 else types[0]}


_STR, _INT, _BOOL, _NSTR, _NINT = _t("string"), _t("integer"), _t("boolean"), \
    _t("string", "null"), _t("integer", "null")
_NBOOL = _t("boolean", "null")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: tuple[str, ...] | str = "all", *,
         closed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": list(props) if required == "all" else list(required)}
    if closed:
        out["additionalProperties"] = False
    return out


def _answer(**props: Any) -> dict[str, Any]:
    """A success answer: ``ok: true`` first, then the route's fields (all required)."""
    return _obj({"ok": {"const": True}, **props})


QUERY: dict[str, tuple[str, dict[str, Any]]] = {
    "tenant_id": ("tenant; implied by a tenant key", _STR),
    "force": ("true, false, 1 or 0", _STR),
    "active_only": ("true, false, 1 or 0", _STR),
    "limit": ("page size, 1-1000, default 100", _STR),
    "cursor": ("next_cursor of the previous page", _STR),
    "status": ("queued, deferred, sending, sent, error, cancelled or all", _STR),
    "batch_code": ("batch code", _STR),
    "older_than_seconds": ("integer >= 0, default report_retention_seconds", _STR),
    "since": ("epoch seconds", _STR),
    "until": ("epoch seconds", _STR),
    "endpoint": ("substring of the endpoint", _STR),
    "address": ("one e-mail address", _STR),
}
_ACCOUNT_FIELDS: dict[str, Any] = {
    "host": _STR, "port": _INT, "user": _NSTR, "password": _NSTR, "tls_mode": {
        "enum": ["starttls", "tls", "none", None]}, "use_tls": _NBOOL, "tls_verify": _NBOOL,
    "tls_ca_file": _NSTR, "max_connections": _NINT, "batch_size": _NINT, "ttl": _NINT,
    "limit_per_minute": _NINT, "limit_per_hour": _NINT, "limit_per_day": _NINT,
    "limit_behavior": {"enum": ["defer", "reject", None]}, "is_pec": _NBOOL,
    "is_pec_account": _NBOOL, "imap_host": _NSTR, "imap_port": _NINT, "imap_user": _NSTR,
    "imap_password": _NSTR, "imap_folder": _NSTR, "imap_tls": _NBOOL, "imap_ssl": _NBOOL,
}
_TENANT_FIELDS: dict[str, Any] = {
    "name": _NSTR, "client_base_url": _NSTR, "client_sync_path": _NSTR,
    "client_attachment_path": _NSTR, "client_auth": _t("object", "null"),
    "signing_secret": _NSTR, "rate_limits": _t("object", "null"),
    "large_file_config": _t("object", "null"), "default_account_id": _NSTR,
    "active": _NBOOL,
}
_ACCOUNT_OUT = ("id", "tenant_id", "host", "port", "user", "has_password", "tls_mode",
                "use_tls", "tls_verify", "tls_ca_file", "is_default", "created_at",
                "updated_at")
_TENANT_OUT = ("id", "name", "client_auth", "has_signing_secret", "active",
               "suspended_batches", "has_api_key", "api_key_expires_at", "report",
               "created_at", "updated_at")
_MESSAGE_OUT = ("id", "tenant_id", "account_id", "status", "priority", "created_at")


_SETTING_TYPES: dict[str, dict[str, Any]] = {
    "bool": _t("boolean", "null"), "int": _t("integer", "null"),
    "float": _t("number", "null"), "str": _NSTR, "str | None": _NSTR,
    "list[int]": {"type": ["array", "null"], "items": _INT},
    "list[str]": {"type": ["array", "null"], "items": _STR},
}


def _settings_patch() -> dict[str, Any]:
    """Every runtime setting, typed from ``RuntimeSettings``; ranges are checked by the
    server (422), null restores the default."""
    import dataclasses

    from mail_proxy.settings import RuntimeSettings

    props = {f.name: _SETTING_TYPES.get(str(f.type), {})
             for f in dataclasses.fields(RuntimeSettings)}
    props["default_priority"] = _t("integer", "string", "null")
    return {"type": "object", "additionalProperties": False, "properties": props}


def _record(required: tuple[str, ...], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required),
            "properties": {name: {} for name in required} | props}


def components() -> dict[str, Any]:
    batch = {"tenant_id": _STR, "batch_code": _STR}
    ids = {"type": "array", "items": _STR, "minItems": 1, "maxItems": 1000}
    command = _record(("id", "command_ts", "actor", "endpoint", "tenant_id", "payload",
                       "response_status", "response_body"))
    return {
        "Error": _obj({"ok": {"const": False}, "error": _STR, "code": _STR, "detail": {}},
                      ("ok", "error", "code")),
        "Ok": _answer(),
        "Health": _answer(status={"const": "ok"}),
        "Status": _answer(active=_BOOL, state={"enum": ["running", "stopping"]},
                          instance=_STR, version=_STR, uptime_seconds=_INT,
                          dispatch_enabled=_BOOL, reporting_enabled=_BOOL),
        "Document": _obj({"openapi": _STR, "paths": _t("object")}),
        "AddMessages": _obj({"messages": {"type": "array", "items": {}},
                             "default_priority": _t("integer", "string"),
                             "tenant_id": _STR}, ("messages",), closed=True),
        "AddResult": _answer(queued=_INT, rejected={"type": "array", "items": _t("object")}),
        "IdsBody": _obj({"tenant_id": _STR, "ids": ids}, ("ids",), closed=True),
        "DeleteResult": _answer(removed=_INT, not_found={"type": "array"},
                                in_flight={"type": "array"}),
        "RetryResult": _answer(retried=_INT, not_found={"type": "array"},
                               not_retryable={"type": "array"}),
        "CleanupBody": _obj({"tenant_id": _STR, "older_than_seconds": _INT}, (), closed=True),
        "TenantBody": _obj({"tenant_id": _STR}, (), closed=True),
        "BatchBody": _obj(batch, (), closed=True),
        "Removed": _obj({"ok": {"const": True}, "removed": _t("integer", "boolean")}),
        "Suspension": _answer(tenant_id=_STR, batch_code=_NSTR,
                              suspended_batches={"type": "array", "items": _STR},
                              pending_messages=_INT),
        "Message": _record(_MESSAGE_OUT),
        "MessageList": _answer(next_cursor=_NSTR,
                               messages={"type": "array", "items": _ref("Message")}),
        "MessageAnswer": _answer(message=_record((*_MESSAGE_OUT, "payload", "events"))),
        "Account": _record(_ACCOUNT_OUT),
        "AccountInput": _obj({"id": _STR, "tenant_id": _STR, **_ACCOUNT_FIELDS},
                             ("id", "host", "port"), closed=True),
        "AccountPatch": _obj({"id": _STR, "tenant_id": _STR, **_ACCOUNT_FIELDS}, (),
                             closed=True),
        "AccountAnswer": _answer(account=_ref("Account")),
        "AccountWrite": _answer(created=_BOOL, account=_ref("Account")),
        "AccountList": _answer(accounts={"type": "array", "items": _ref("Account")}),
        "AccountDeleted": _answer(cancelled_messages=_INT),
        "Tenant": _record(_TENANT_OUT),
        "TenantInput": _obj({"id": _STR, **_TENANT_FIELDS}, ("id",), closed=True),
        "TenantPatch": _obj({"id": _STR, **_TENANT_FIELDS}, (), closed=True),
        "TenantAnswer": _answer(tenant=_ref("Tenant")),
        "TenantWrite": _obj({"ok": {"const": True}, "created": _BOOL, "tenant": _ref("Tenant"),
                             "api_key": _STR}, ("ok", "created", "tenant")),
        "TenantList": _answer(tenants={"type": "array", "items": _ref("Tenant")}),
        "TenantDeleted": _answer(deleted=_obj({"accounts": _INT, "messages": _INT})),
        "ApiKeyBody": _obj({"expires_at": _t("number", "null")}, (), closed=True),
        "ApiKey": _answer(tenant_id=_STR, api_key=_STR, expires_at=_NINT),
        "Revoked": _answer(tenant_id=_STR, revoked=_BOOL),
        "SettingsPatch": _settings_patch(),
        "Instance": _answer(instance=_obj({"name": _STR, "version": _STR,
                                           "started_at": _INT, "settings": _t("object")})),
        "CommandList": _answer(commands={"type": "array", "items": command},
                               next_cursor=_NSTR),
        "CommandExport": _answer(truncated=_BOOL, commands={"type": "array", "items": _record(
            ("endpoint", "tenant_id", "payload", "command_ts"))}),
        "Suppression": _record(("address", "reason", "source", "bounce_status", "created_at")),
        "SuppressionInput": _obj({"tenant_id": _STR, "address": _STR, "reason": _NSTR},
                                 ("address",), closed=True),
        "SuppressionAnswer": _answer(suppression=_ref("Suppression")),
        "SuppressionList": _answer(suppressions={"type": "array", "items": _ref("Suppression")},
                                   next_cursor=_NSTR),
    }

def template(path: str) -> str:
    """A Starlette path (``/messages/{id:rest}``) as an OpenAPI path."""
    return path.replace(":rest", "")


def _parameters(path: str, op: Op) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in (p.strip("{}") for p in path.split("/") if p.startswith("{")):
        out.append({"name": name, "in": "path", "required": True,
                    "schema": {"type": "string", "minLength": 1}})
    for name in op.params:
        description, schema = QUERY[name]
        if name == _TID and op.access == "admin":  # no tenant key gets that far
            description = "filter on one tenant"
        out.append({"name": name, "in": "query", "required": False,
                    "description": description, "schema": schema})
    return out


def _responses(op: Op, method: str) -> dict[str, Any]:
    status, name = op.ok
    out: dict[str, Any] = {}
    if name == "text":
        content = {"text/plain": {"schema": {"type": "string"}}}
    elif name == "binary":
        content = {"application/octet-stream": {"schema": {"type": "string"}}}
    else:
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    out[str(status)] = {"description": "success", "headers": headers(status),
                        "content": content}
    if status == 201 and op.replaces:  # create-or-replace routes answer 200 on replace
        out["200"] = {**out["201"], "description": "replaced (or already present)"}
    codes = set(op.errors)
    if op.access != "public":
        codes |= set(_AUTH_ERRORS)
    if op.body is not None or method in ("POST", "PATCH"):
        codes |= set(_BODY_ERRORS) | {400}
    if op.params:
        codes.add(400)
    for code in sorted(codes):
        out[str(code)] = {"description": ERROR_TEXT[code], "headers": headers(code),
                          "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "summary": op.summary,
        "description": f"Access: {ACCESS_TEXT[op.access]}.",
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_')}".replace(
            "{", "").replace("}", "").replace("-", "_").replace(".", "_"),
        "x-access": op.access,
        "parameters": _parameters(path, op),
        "responses": _responses(op, method),
        "security": [] if op.access == "public" else [{"ApiToken": []}, {"Bearer": []}],
    }
    if op.body is not None:
        doc["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{op.body}"}}}}
    return doc


def build(routes: Sequence[tuple[str, list[str], Any]] | None = None) -> dict[str, Any]:
    if routes is None:
        from mail_proxy.api.routes import ROUTES

        routes = ROUTES
    paths: dict[str, dict[str, Any]] = {}
    for path, methods, _fn in routes:
        for method in methods:
            key = (method, template(path))
            if key not in OPS:
                raise KeyError(f"route {method} {path} has no OpenAPI description")
            paths.setdefault(key[1], {})[method.lower()] = _operation(method, key[1], OPS[key])
    return {
        "openapi": "3.1.0",
        "info": {"title": "mail-proxy", "version": __version__,
                 "description": "REST API of a mail-proxy worker (docs/api.md)."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiToken": {"type": "apiKey", "in": "header", "name": "X-API-Token",
                             "description": "admin token or tenant API key"},
                "Bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <admin token or API key>"},
            },
            "schemas": components(),
        },
    }


_CACHE: dict[str, Any] = {}


async def openapi_json(request: Request) -> Response:
    if "doc" not in _CACHE:
        _CACHE["doc"] = build()
    return JSONResponse(_CACHE["doc"])


def render_markdown(doc: dict[str, Any]) -> str:
    """The route reference of docs/api.md, from the document."""
    lines = ["# REST API reference", "",
             "Generated from `GET /openapi.json` by `python -m mail_proxy.api.openapi "
             "--markdown`; a test fails when it drifts. Conventions, errors and field rules "
             "are in the specification (api.md); `GET /download/{token}` answers 404 "
             "`link_not_found` in this version.", "",
             "| Method | Path | Access | Summary |", "|---|---|---|---|"]
    details: list[str] = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            lines.append(f"| {method.upper()} | `{path}` | {op['x-access']} | "
                         f"{op['summary']} |")
            details += ["", f"## {method.upper()} {path}", "", op["summary"] + ".", "",
                        op["description"]]
            query = [p for p in op["parameters"] if p["in"] == "query"]
            if query:
                details += ["", "Query: " + ", ".join(f"`{p['name']}` ({p['description']})"
                                                      for p in query) + "."]
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                details += ["", f"Body: `{ref.rsplit('/', 1)[-1]}` (see /openapi.json)."]
            details += ["", "Statuses: " + ", ".join(op["responses"]) + "."]
    return "\n".join([*lines, *details]) + "\n"


if __name__ == "__main__":  # pragma: no cover - developer tool
    document = build()
    if "--markdown" in sys.argv:
        sys.stdout.write(render_markdown(document))
    else:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
