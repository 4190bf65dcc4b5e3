"""GET /messages and GET /messages/{id} (api.md §5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.request import api_state, int_param, principal, tenant_scope
from mail_proxy.manager import messages as manager


async def list_messages(request: Request) -> Response:
    state = api_state(request)
    who = await principal(request)
    q = request.query_params
    tenant_id = tenant_scope(who, q.get("tenant_id"), required=False)
    answer = await manager.list_messages(
        state.core, tenant_id=tenant_id, status=q.get("status"), batch_code=q.get("batch_code"),
        limit=int_param(request, "limit", 100, 1, 1000) or 100, cursor=q.get("cursor"))
    return JSONResponse(answer)


async def get_message(request: Request) -> Response:
    state = api_state(request)
    who = await principal(request)
    tenant_id = tenant_scope(who, request.query_params.get("tenant_id"))
    assert tenant_id is not None
    message = await manager.get_message(state.core, tenant_id, request.path_params["id"])
    return JSONResponse({"ok": True, "message": message})
