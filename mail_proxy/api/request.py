"""Reading requests: JSON bodies, scalar parameters from query or body, credentials."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from mail_proxy import jsonfast
from mail_proxy.api.errors import ApiError
from mail_proxy.api.ratelimit import limit_rate
from mail_proxy.api.state import ApiState
from mail_proxy.manager.core import ADMIN, Principal
from mail_proxy.manager.enqueue import collector_paused

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
# What a query parameter's integer may look like: ASCII digits and an optional minus sign.
# Python's int() also reads "1_0", "+5", " 7 " and full-width digits, which no client means.
_INTEGER = re.compile(r"-?[0-9]+")


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


async def json_body(request: Request) -> Any:
    """The decoded body; an empty body reads as ``{}`` (api.md §1.1)."""
    raw = await request.body()
    request.scope["mp_raw"] = raw  # the command log reads the body from here, never again
    if not raw.strip():
        return {}
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # not decoded here: a gzip body read as "not valid UTF-8", and a plain one labelled
        # gzip was taken as it was (API hunt)
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Encoding {encoding} is not accepted: send the body as it is "
                       "(compress on the wire with TLS or a proxy, not per request)")
    content_type = request.headers.get("content-type", "")
    # curl -d sends form encoding by default; a JSON-looking body is still accepted then, so
    # the quick-start curl line works, but any other declared type is refused.
    if content_type and not _is_json(content_type) and not (
            content_type.startswith("application/x-www-form-urlencoded")
            and raw.lstrip()[:1] in (b"{", b"[")):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be JSON (Content-Type: application/json), not "
                       f"{content_type.split(';')[0]}")
    try:
        with collector_paused(len(raw) // 1024):  # a big body is a big batch: see there
            body = jsonfast.loads_strict(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8") from None
    except jsonfast.RefusedJson as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json",
                       f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}") from None
    request.scope["mp_body"] = body  # parsed once; the command log reuses it
    return body


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    return body


def scalar(request: Request, body: dict[str, Any] | None, name: str) -> Any:
    """A scalar parameter from the query string or the body; both must agree."""
    in_query = request.query_params.get(name)
    in_body = body.get(name) if body else None
    if in_query is not None and in_body is not None and str(in_body) != in_query:
        raise ApiError(400, "conflicting_parameters",
                       f"'{name}' is given in the query and in the body with different values")
    return in_body if in_body is not None else in_query


def flag(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ApiError(400, "invalid_parameter", f"'{name}' must be true or false",
                   detail={"parameter": name})


def int_param(request: Request, name: str, default: int | None = None,
              low: int | None = None, high: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value):
        raise ApiError(400, "invalid_parameter", f"'{name}' must be an integer",
                       detail={"parameter": name})
    # int() refuses more than 4,300 digits: a number that long is out of any range anyway
    number = int(value) if len(value) <= 40 else (-1 if value[0] == "-" else 1) * 10**40
    if (low is not None and number < low) or (high is not None and number > high):
        raise ApiError(400, "invalid_parameter",
                       f"'{name}' must be between {low} and {high}", detail={"parameter": name})
    return number


def _one_header(request: Request, name: str) -> str | None:
    """A credential header's value, trimmed of the spaces HTTP allows around it; a header
    repeated with different values is refused: a proxy in front that keeps the last one
    would authenticate someone else than this server, which keeps the first."""
    values = {v.strip(" \t") for v in request.headers.getlist(name)}
    if len(values) > 1:
        raise ApiError(400, "conflicting_credentials",
                       f"the {name} header is given more than once with different values")
    return values.pop() if values else None


def bearer(request: Request) -> str | None:
    token = _one_header(request, "x-api-token") or None
    auth = _one_header(request, "authorization")
    from_auth = None
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            from_auth = value.strip()
    if token is not None and from_auth is not None and token != from_auth:
        raise ApiError(400, "conflicting_credentials",
                       "X-API-Token and Authorization carry different tokens")
    return token if token is not None else from_auth


async def principal(request: Request, *, admin_only: bool = False) -> Principal:
    """Authenticate the request (api.md §2.2); fail closed."""
    from mail_proxy.manager.auth import authenticate

    state = api_state(request)
    token = bearer(request)
    if not token:
        raise ApiError(401, "missing_token",
                       "a token is required: send X-API-Token or Authorization: Bearer")
    who = await authenticate(state.core, token, state.admin_token)
    # Counted only once the token is known to be good: buckets keyed by whatever a client
    # sends could be multiplied by random tokens until the table was cleared for everyone.
    # Public routes never get here, so a liveness probe is never told to back off.
    limit_rate(request, token, state.core.settings.api_requests_per_minute)
    if admin_only and who.kind != "admin":
        raise ApiError(403, "admin_required", "this route needs the admin token")
    request.scope["principal"] = who
    return who


def tenant_scope(who: Principal, requested: Any, *, required: bool = True) -> str | None:
    """The tenant a request acts on (api.md §2.3)."""
    if requested == "":  # an empty parameter is a missing one, not a tenant named ""
        requested = None
    if requested is not None and not isinstance(requested, str):
        raise ApiError(400, "invalid_parameter", "'tenant_id' must be a string",
                       detail={"parameter": "tenant_id"})
    if who.kind == "tenant":
        if requested is not None and requested != who.tenant_id:
            raise ApiError(403, "tenant_mismatch",
                           f"this key belongs to tenant '{who.tenant_id}', not '{requested}'")
        return who.tenant_id
    if requested is None and required:
        raise ApiError(400, "missing_parameter", "'tenant_id' is required with the admin token",
                       detail={"parameter": "tenant_id"})
    return requested


__all__ = ["ADMIN", "api_state", "bearer", "flag", "int_param", "json_body", "json_object",
           "principal", "scalar", "tenant_scope"]
