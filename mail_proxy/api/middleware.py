"""Cross-cutting request handling as plain ASGI: request ids, body limit, drain, metrics."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mail_proxy.api.errors import ApiError, error_response

log = logging.getLogger("mail_proxy.api")
_REQUEST_ID = re.compile(r"^[\x20-\x7e]{1,128}$")  # printable ASCII, space included (api.md §1.2)
# Routes that keep answering while the worker drains (api.md §3).
DRAIN_EXEMPT = frozenset({"/health", "/status", "/metrics"})


class ApiMiddleware:
    def __init__(self, app: ASGIApp, api: Any) -> None:
        self.app = app
        self.api = api  # ApiState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        # A request id only has to be unique, not unguessable: the interpreter's generator
        # (reseeded in forked children) spares a getrandom() system call per request.
        request_id = given if _REQUEST_ID.fullmatch(given) else f"{random.getrandbits(64):016x}"
        scope["request_id"] = request_id
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            if self.api.stopping and scope["path"] not in DRAIN_EXEMPT:
                response = error_response(503, "shutting_down", "the service is shutting down")
                await response(scope, receive, send_with_id)
                return
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                # PostgreSQL cannot store or compare text holding NUL (a 500 on every route
                # taking an id), and no id, name or address has a use for it
                response = error_response(400, "invalid_parameter",
                                          "the path or query string holds a NUL character")
                await response(scope, receive, send_with_id)
                return
            limit = self.api.core.settings.max_request_bytes
            declared = headers.get(b"content-length")
            if declared is not None:
                try:
                    too_big = int(declared) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    if int(declared) <= limit + DRAIN_BYTES:
                        await _drain(receive, DRAIN_BYTES + limit)
                    response = error_response(413, "body_too_large",
                                              f"the body is larger than {limit} bytes")
                    await response(scope, receive, send_with_id)
                    return
            await self.app(scope, _limited(receive, limit), send_with_id)
        finally:
            # a real route answered before its handler ran (405, a 413 on Content-Length,
            # 503 while draining) is counted under its template too (metrics hunt)
            route = scope.get("mp_route") or route_template(scope.get("path", ""))
            status = status_holder["status"]
            # Refused and failed requests at info, so the id a client got back can be found
            # in the log; every request only at debug: an access log at info would write
            # thousands of lines a second under load. The route template, never the raw
            # path, is logged: it holds no client text to forge log lines with.
            level = logging.INFO if status >= 400 else logging.DEBUG
            if log.isEnabledFor(level):
                log.log(level, "%s %s -> %d in %.1f ms, request_id=%s", scope.get("method"),
                        route, status, (time.perf_counter() - started) * 1000, request_id)
            metrics = self.api.metrics
            if metrics is not None:
                metrics.http_requests_total.labels(route, str(status_holder["status"])).inc()
                if route == "/commands/add-messages":
                    metrics.enqueue_seconds.observe(time.perf_counter() - started)


# A refused body up to this size is read and dropped before the 413 is sent. Closing the
# connection with unread data makes the kernel reset it, and the client may then see
# "connection reset" instead of the answer; beyond this size that is the lesser evil.
DRAIN_BYTES = 1024 * 1024


async def _drain(receive: Receive, cap: int) -> None:
    seen = 0
    while seen <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_BYTES)
                raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
        return message

    return wrapped


_TEMPLATES: list[tuple[re.Pattern[str], str]] = []


def route_template(path: str) -> str:
    """The route template ("/messages/{id}") a path belongs to, whatever the method;
    "unmatched" for no route at all."""
    if not _TEMPLATES:
        from starlette.routing import compile_path

        from mail_proxy.api.routes import ROUTES

        for template, _methods, _handler in ROUTES:
            regex, _format, _convertors = compile_path(template)
            _TEMPLATES.append((regex, re.sub(r"\{(\w+):\w+\}", r"{\1}", template)))
    for regex, label in _TEMPLATES:
        if regex.match(path):
            return label
    return "unmatched"
