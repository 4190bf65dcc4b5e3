"""Command-log rows for state-changing requests (api.md §8).

Every POST, PATCH and DELETE except ``/commands/run-now`` is recorded once its answer is
known, success or not, provided the caller was identified (a request refused with 401 or
``tenant_inactive`` has no actor and is not recorded). ``manager.command_log.record`` masks
secrets and caps sizes; this module only gathers what to record.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mail_proxy.api.request import api_state
from mail_proxy.jsonfast import loads_strict
from mail_proxy.manager import command_log

log = logging.getLogger("mail_proxy.api")
MUTATING = frozenset({"POST", "PATCH", "DELETE"})
_UNSET = object()
NOT_RECORDED = frozenset({"/commands/run-now"})


def endpoint_label(method: str, path: str) -> str:
    """``"PATCH /account/{id}"``: the route template, so rows group by operation."""
    return f"{method} {path.replace(':rest', '')}"


async def _payload(request: Request) -> dict[str, Any]:
    # Only what the handler already read: reading the request stream again here could wait
    # forever for a body that was refused (413) or already delivered.
    body: Any = request.scope.get("mp_body", _UNSET)
    if body is _UNSET:
        raw = request.scope.get("mp_raw")
        try:
            body = (loads_strict(raw) if raw.strip() else {}) if raw is not None else None
        except ValueError:  # not usable JSON (loads_strict raises nothing else): the params tell
            body = None
    payload: dict[str, Any] = dict(body) if isinstance(body, dict) else (
        {} if body is None else {"body": body})
    for name, value in (*request.path_params.items(), *request.query_params.items()):
        payload.setdefault(name, value)
    return payload


def _tenant_of(request: Request, payload: dict[str, Any]) -> str | None:
    who = request.scope.get("principal")
    if who is not None and who.is_tenant:
        return str(who.tenant_id)
    chosen = request.scope.get("mp_tenant")
    if isinstance(chosen, str):
        return chosen
    value = payload.get("tenant_id")
    return value if isinstance(value, str) else None


async def record(request: Request, path: str, response: Response) -> None:
    """Append the command-log row of this request, if it is one that changes state."""
    who = request.scope.get("principal")
    if request.method not in MUTATING or path in NOT_RECORDED or who is None \
            or request.scope.get("mp_audited"):
        return
    payload = await _payload(request)
    try:
        body: Any = json.loads(bytes(response.body))
    except ValueError:
        body = None
    try:
        await command_log.record(
            api_state(request).core, actor=who.actor,
            endpoint=endpoint_label(request.method, path), tenant_id=_tenant_of(request, payload),
            payload=payload, response_status=response.status_code, response_body=body)
    except Exception as exc:
        # The change itself is committed; failing the answer now would make the client
        # retry an operation that succeeded. Only the exception type: its text may hold data.
        log.warning("command log row not written for %s %s (request %s): %s",
                    request.method, path, request.scope.get("request_id"), type(exc).__name__)
