"""Suppression list routes (enterprise.md §2): admin, or a tenant key for its own tenant."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.errors import ApiError
from mail_proxy.api.request import api_state, json_object, principal, tenant_scope
from mail_proxy.errors import ValidationFailed
from mail_proxy.manager import suppressions as manager


def _tenant(request: Request, requested: object) -> str:
    who = request.scope["principal"]
    tenant_id = tenant_scope(who, requested)
    assert tenant_id is not None
    request.scope["mp_tenant"] = tenant_id
    return tenant_id


async def list_suppressions(request: Request) -> Response:
    await principal(request)
    q = request.query_params
    tenant_id = _tenant(request, q.get("tenant_id"))
    answer = await manager.list_suppressions(
        api_state(request).core, tenant_id, address_filter=q.get("address"),
        limit=q.get("limit", "100"), cursor=q.get("cursor"))
    return JSONResponse({"ok": True, **answer})


async def add_suppression(request: Request) -> Response:
    who = await principal(request)
    body = await json_object(request)
    entry, created = await manager.add_suppression(api_state(request).core, body, who,
                                                   request.query_params.get("tenant_id"))
    return JSONResponse({"ok": True, "suppression": entry},
                        status_code=201 if created else 200)


async def remove_suppression(request: Request) -> Response:
    await principal(request)
    tenant_id = _tenant(request, request.query_params.get("tenant_id"))
    address = request.path_params["address"]
    try:
        removed = await manager.remove_suppression(api_state(request).core, tenant_id, address)
    except ValidationFailed:
        # A bad path parameter is 400, not 422 (api.md §1.3); the manager says 422.
        raise ApiError(400, "invalid_parameter", "'address' is not a valid e-mail address",
                       detail={"parameter": "address"}) from None
    return JSONResponse({"ok": True, "removed": removed})
