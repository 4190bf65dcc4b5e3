"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mail_proxy.api.errors import from_exception
from mail_proxy.api.middleware import ApiMiddleware
from mail_proxy.api.state import ApiState

Handler = Callable[[Request], Awaitable[Response]]


def endpoint(path: str, fn: Handler) -> Handler:
    """Wrap a handler so every exception becomes a JSON answer, and tag the route."""

    async def wrapped(request: Request) -> Response:
        request.scope["mp_route"] = path
        try:
            return await fn(request)
        except Exception as exc:
            return from_exception(exc, request)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def route(path: str, fn: Handler, methods: list[str]) -> Route:
    return Route(path, endpoint(path, fn), methods=methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    return from_exception(exc, request)


def create_app(api: ApiState, *, lifespan: Any = None) -> Starlette:
    from mail_proxy.api.routes import ROUTES

    app = Starlette(routes=[route(p, fn, m) for p, m, fn in ROUTES],
                    exception_handlers={HTTPException: _http_error, Exception: _http_error},
                    lifespan=lifespan)
    app.state.api = api
    app.add_middleware(ApiMiddleware, api=api)
    return app
