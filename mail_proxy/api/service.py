"""GET /health, /status, /metrics (api.md §3)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.api.errors import error_response
from mail_proxy.api.request import api_state, principal


async def health(request: Request) -> Response:
    state = api_state(request)
    if state.stopping:
        return error_response(503, "shutting_down", "the service is shutting down",
                              extra={"status": "stopping"})
    return JSONResponse({"ok": True, "status": "ok"})


async def status(request: Request) -> Response:
    state = api_state(request)
    await principal(request)
    settings = state.core.settings
    running = "stopping" if state.stopping else "running"
    return JSONResponse({
        "ok": True, "active": settings.dispatch_enabled and running == "running",
        "state": running, "instance": state.core.instance_name, "version": state.version,
        "uptime_seconds": int(time.time()) - state.started_at,
        "dispatch_enabled": settings.dispatch_enabled,
        "reporting_enabled": settings.reporting_enabled})


async def metrics(request: Request) -> Response:
    state = api_state(request)
    if not state.core.settings.metrics_public:
        await principal(request, admin_only=True)
    if state.metrics is None:
        return error_response(503, "storage_unavailable", "metrics are not available")
    from mail_proxy.api.gauges import refresh_queue_gauges

    await refresh_queue_gauges(state)
    if state.live_gauges is not None:
        state.live_gauges()
    body, content_type = state.metrics.render()
    return Response(body, media_type=None, headers={"content-type": content_type})
