"""GET/PATCH /instance (api.md §8): runtime settings, admin only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.request import api_state, json_object
from mail_proxy.api.state import ApiState
from mail_proxy.api.tenants import admin
from mail_proxy.manager import instance as manager


def _answer(state: ApiState, settings: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"ok": True, "instance": {
        "name": state.core.instance_name, "version": state.version,
        "started_at": state.started_at, "settings": settings}})


async def get_instance(request: Request) -> Response:
    await admin(request)
    state = api_state(request)
    return _answer(state, await manager.get_settings(state.core))


async def patch_instance(request: Request) -> Response:
    await admin(request)
    state = api_state(request)
    body = await json_object(request)
    return _answer(state, await manager.patch_settings(state.core, body))
