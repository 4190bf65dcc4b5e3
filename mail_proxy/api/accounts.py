"""Account routes (api.md §6.2). Permissions live in ``manager.accounts``; this layer only
adds the 422-before-403 order for unknown fields of tenant-key requests."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.request import api_state, flag, json_object, principal, tenant_scope
from mail_proxy.api.tenants import reject_unknown
from mail_proxy.manager import accounts as manager
from mail_proxy.manager.core import Principal

KNOWN_FIELDS = frozenset({"id", "tenant_id", *manager.CHECKS, *manager.ALIASES})


def _query_tenant(request: Request) -> str | None:
    return request.query_params.get("tenant_id")


def _check_unknown(who: Principal, body: dict[str, object]) -> None:
    if who.is_tenant:
        reject_unknown(body, KNOWN_FIELDS)


async def put_account(request: Request) -> Response:
    who = await principal(request)
    body = await json_object(request)
    _check_unknown(who, body)
    account, created = await manager.put_account(api_state(request).core, body, who,
                                                 _query_tenant(request))
    request.scope["mp_tenant"] = account["tenant_id"]
    return JSONResponse({"ok": True, "created": created, "account": account},
                        status_code=201 if created else 200)


async def list_accounts(request: Request) -> Response:
    who = await principal(request)
    tenant_id = tenant_scope(who, _query_tenant(request), required=False)
    accounts = await manager.list_accounts(api_state(request).core, tenant_id)
    return JSONResponse({"ok": True, "accounts": accounts})


async def get_account(request: Request) -> Response:
    who = await principal(request)
    tenant_id = tenant_scope(who, _query_tenant(request))
    assert tenant_id is not None
    account = await manager.get_account(api_state(request).core, tenant_id,
                                        request.path_params["id"])
    return JSONResponse({"ok": True, "account": account})


async def patch_account(request: Request) -> Response:
    who = await principal(request)
    tenant_id = tenant_scope(who, _query_tenant(request))
    assert tenant_id is not None
    body = await json_object(request)
    if isinstance(body.get("tenant_id"), str):
        tenant_scope(who, body["tenant_id"])  # another tenant's id from a tenant key: 403
    _check_unknown(who, body)
    account = await manager.patch_account(api_state(request).core, tenant_id,
                                          request.path_params["id"], body, who)
    return JSONResponse({"ok": True, "account": account})


async def delete_account(request: Request) -> Response:
    who = await principal(request)
    tenant_id = tenant_scope(who, _query_tenant(request))
    assert tenant_id is not None
    force = flag(request, "force")
    cancelled = await manager.delete_account(api_state(request).core, tenant_id,
                                             request.path_params["id"], force=force,
                                             principal=who)
    return JSONResponse({"ok": True, "cancelled_messages": cancelled})
