"""GET /command-log and GET /command-log/export (api.md §8), admin only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.request import api_state
from mail_proxy.api.tenants import admin
from mail_proxy.manager import command_log as manager


async def list_commands(request: Request) -> Response:
    await admin(request)
    q = request.query_params
    answer = await manager.list_commands(
        api_state(request).core, tenant_id=q.get("tenant_id"), since=q.get("since"),
        until=q.get("until"), endpoint=q.get("endpoint"), limit=q.get("limit", "100"),
        cursor=q.get("cursor"))
    return JSONResponse({"ok": True, **answer})


async def export_commands(request: Request) -> Response:
    await admin(request)
    q = request.query_params
    answer = await manager.export_commands(
        api_state(request).core, tenant_id=q.get("tenant_id"), since=q.get("since"),
        until=q.get("until"))
    return JSONResponse({"ok": True, **answer})
