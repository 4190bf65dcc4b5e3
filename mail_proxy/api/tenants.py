"""Tenant routes (api.md §7.2): create/replace, list, read, patch, delete, API keys."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.errors import ApiError
from mail_proxy.api.request import api_state, flag, json_object, principal
from mail_proxy.errors import FieldError, ValidationFailed
from mail_proxy.manager import tenants as manager
from mail_proxy.manager.core import Principal

# Every field a tenant body may carry; used to answer 422 for unknown fields before the
# manager's tenant-key check, which would otherwise call them 403 forbidden_field.
KNOWN_FIELDS = frozenset({"id", *manager.DEFAULTS})


async def admin(request: Request) -> Principal:
    """The admin principal, or 403 ``admin_required``. Unlike ``principal(admin_only=True)``
    the caller stays known, so the refused attempt is still written to the command log."""
    who = await principal(request)
    if who.kind != "admin":
        raise ApiError(403, "admin_required", "this route needs the admin token")
    return who


def reject_unknown(body: dict[str, object], known: frozenset[str]) -> None:
    """422 ``unknown_field`` listing every unknown field (api.md §1.3)."""
    unknown = [name for name in body if name not in known]
    if unknown:
        raise ValidationFailed([FieldError(name, "unknown_field", "is not a known field")
                                for name in unknown])


def _path_tenant(request: Request) -> str:
    tenant_id: str = request.path_params["id"]
    request.scope["mp_tenant"] = tenant_id
    return tenant_id


async def create_tenant(request: Request) -> Response:
    who = await admin(request)
    body = await json_object(request)
    if isinstance(body.get("id"), str):
        request.scope["mp_tenant"] = body["id"]
    tenant, created, api_key = await manager.put_tenant(api_state(request).core, body, who)
    answer: dict[str, object] = {"ok": True, "created": created, "tenant": tenant}
    if created:
        answer["api_key"] = api_key
    return JSONResponse(answer, status_code=201 if created else 200)


async def list_tenants(request: Request) -> Response:
    await admin(request)
    active_only = flag(request, "active_only")
    tenants = await manager.list_tenants(api_state(request).core, active_only=active_only)
    return JSONResponse({"ok": True, "tenants": tenants})


async def get_tenant(request: Request) -> Response:
    who = await principal(request)
    tenant_id = _path_tenant(request)
    if who.is_tenant and tenant_id != who.tenant_id:
        raise ApiError(403, "tenant_mismatch",
                       f"this key belongs to tenant '{who.tenant_id}', not '{tenant_id}'",
                       detail={"tenant_id": tenant_id})
    tenant = await manager.get_tenant(api_state(request).core, tenant_id)
    return JSONResponse({"ok": True, "tenant": tenant})


async def patch_tenant(request: Request) -> Response:
    who = await principal(request)
    tenant_id = _path_tenant(request)
    body = await json_object(request)
    if who.is_tenant:
        reject_unknown(body, KNOWN_FIELDS)
    tenant = await manager.patch_tenant(api_state(request).core, tenant_id, body, who)
    return JSONResponse({"ok": True, "tenant": tenant})


async def delete_tenant(request: Request) -> Response:
    await admin(request)
    tenant_id = _path_tenant(request)
    force = flag(request, "force")
    deleted = await manager.delete_tenant(api_state(request).core, tenant_id, force=force)
    return JSONResponse({"ok": True, "deleted": deleted})


async def create_api_key(request: Request) -> Response:
    await admin(request)
    tenant_id = _path_tenant(request)
    body = await json_object(request)
    reject_unknown(body, frozenset({"expires_at"}))
    answer = await manager.create_api_key(api_state(request).core, tenant_id,
                                          body.get("expires_at"))
    return JSONResponse({"ok": True, **answer}, status_code=201)


async def revoke_api_key(request: Request) -> Response:
    await admin(request)
    tenant_id = _path_tenant(request)
    revoked = await manager.revoke_api_key(api_state(request).core, tenant_id)
    return JSONResponse({"ok": True, "tenant_id": tenant_id, "revoked": revoked})
