"""POST /commands/* (api.md §4)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.request import api_state, json_object, principal, scalar, tenant_scope
from mail_proxy.api.state import ApiState
from mail_proxy.api.tenants import reject_unknown
from mail_proxy.manager import enqueue, tenants
from mail_proxy.manager import messages as manager
from mail_proxy.manager.enqueue import collector_paused
from mail_proxy.manager.fields import query_integer

_IDS = frozenset({"ids"})
_AGE = frozenset({"older_than_seconds"})
_BATCH = frozenset({"batch_code"})
_NOTHING: frozenset[str] = frozenset()


async def _command(request: Request, fields: frozenset[str], *, tenant_required: bool = True
                   ) -> tuple[ApiState, dict[str, Any], Any]:
    """Authenticate, read the body and resolve the tenant a command acts on. A field the
    command does not know is refused, as add-messages does: `{"batch-code": "x"}` (a typo)
    was ignored, and the suspend it went with suspended the whole tenant (API hunt)."""
    state = api_state(request)
    who = await principal(request)
    body = await json_object(request)
    reject_unknown(body, fields | {"tenant_id"})
    tenant_id = tenant_scope(who, scalar(request, body, "tenant_id"), required=tenant_required)
    request.scope["mp_tenant"] = tenant_id
    return state, body, tenant_id


async def add_messages(request: Request) -> Response:
    # The collector stays off from parsing to the answer, and comes back on only once the
    # batch's objects are freed: its count of young objects is then back where it was, so
    # no collection rescans them. Pausing each stage alone (enqueue.collector_paused) let a
    # collection run between stages over everything still alive: 10-12 % of a 1,000-message
    # request, measured in-process (docs/performance.md).
    with collector_paused(_declared_kib(request)):
        response = await _add_messages(request)
    return response


def _declared_kib(request: Request) -> int:
    length = request.headers.get("content-length", "")
    return int(length) // 1024 if length.isdigit() and len(length) < 16 else 0


async def _add_messages(request: Request) -> Response:
    state = api_state(request)
    who = await principal(request)
    body = await json_object(request)
    if "tenant_id" in request.query_params:  # api.md §1.1: query or body, both must agree
        body = {**body, "tenant_id": scalar(request, body, "tenant_id")}
    answer = await enqueue.add_messages(state.core, body, who,
                                        audit="POST /commands/add-messages")
    if answer.pop("_recorded", False):
        request.scope["mp_audited"] = True  # written with the messages, in one commit
    return JSONResponse(answer)


async def delete_messages(request: Request) -> Response:
    state, body, tenant_id = await _command(request, _IDS)
    return JSONResponse(await manager.delete_messages(state.core, tenant_id, body.get("ids")))


async def retry_messages(request: Request) -> Response:
    state, body, tenant_id = await _command(request, _IDS)
    return JSONResponse(await manager.retry_messages(state.core, tenant_id, body.get("ids")))


async def cleanup_messages(request: Request) -> Response:
    state, body, tenant_id = await _command(request, _AGE, tenant_required=False)
    age = scalar(request, body, "older_than_seconds")
    age = query_integer(age)  # a string of anything but plain digits is refused below
    return JSONResponse(await manager.cleanup_messages(state.core, tenant_id, age))


async def run_now(request: Request) -> Response:
    state, _body, tenant_id = await _command(request, _NOTHING, tenant_required=False)
    # a typo in the tenant would otherwise wake nothing and still answer ok
    await manager.require_tenant(state.core.store, tenant_id)
    state.core.wake(tenant_id)
    if state.wake_reporter is not None:
        state.wake_reporter(tenant_id, tenant_id is not None)
    return JSONResponse({"ok": True})


async def suspend(request: Request) -> Response:
    state, body, tenant_id = await _command(request, _BATCH)
    answer = await tenants.suspend(state.core, tenant_id, scalar(request, body, "batch_code"))
    return JSONResponse({"ok": True, **answer})


async def activate(request: Request) -> Response:
    state, body, tenant_id = await _command(request, _BATCH)
    answer = await tenants.activate(state.core, tenant_id, scalar(request, body, "batch_code"))
    state.core.wake(tenant_id)
    return JSONResponse({"ok": True, **answer})
