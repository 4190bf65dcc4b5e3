"""The Starlette application factory."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mail_proxy.api import audit
from mail_proxy.api.errors import from_exception
from mail_proxy.api.middleware import ApiMiddleware
from mail_proxy.api.ratelimit import RateLimiter
from mail_proxy.api.state import ApiState

Handler = Callable[[Request], Awaitable[Response]]
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
CLIENT_CLOSED = 499
log = logging.getLogger("mail_proxy.api")


def endpoint(path: str, fn: Handler) -> Handler:
    """Wrap a handler: turn every exception into JSON, record the command log, and tag the
    route for metrics."""

    label = _CONVERTER.sub(r"{\1}", path)  # "/messages/{id}", as api.md writes routes

    async def wrapped(request: Request) -> Response:
        request.scope["mp_route"] = label
        try:
            response = await fn(request)
        except ClientDisconnect:
            # The client hung up while its body was being read: nothing was done and nobody
            # hears the answer. Counted as 499 (the status proxies use for it), not as a 500
            # any tenant could raise at will, and not recorded in the command log (metrics
            # hunt: a 500, an "internal error" traceback and a command-log row).
            log.info("client closed the connection before its request was read (request "
                     "%s, %s %s)", request.scope.get("request_id"), request.method, label)
            return Response(status_code=CLIENT_CLOSED)
        except Exception as exc:
            response = from_exception(exc, request)
        await audit.record(request, path, response)
        return response

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _by_method(path: str, handlers: dict[str, Handler]) -> Handler:
    """One endpoint per path dispatching on the method, so a 405 lists every method."""
    wrapped = {method: endpoint(path, fn) for method, fn in handlers.items()}
    if "GET" in wrapped:
        wrapped.setdefault("HEAD", wrapped["GET"])

    async def dispatch(request: Request) -> Response:
        return await wrapped[request.method](request)

    return dispatch


async def _http_error(request: Request, exc: Exception) -> Response:
    return from_exception(exc, request)


def build_routes(table: Sequence[tuple[str, list[str], Handler]]) -> list[Route]:
    grouped: dict[str, dict[str, Handler]] = {}
    for path, methods, fn in table:
        for method in methods:
            grouped.setdefault(path, {})[method] = fn
    return [Route(path, _by_method(path, handlers), methods=list(handlers))
            for path, handlers in grouped.items()]


def create_app(api: ApiState, *, lifespan: Any = None) -> Starlette:
    from mail_proxy.api.routes import ROUTES

    app = Starlette(routes=build_routes(ROUTES),
                    exception_handlers={HTTPException: _http_error, Exception: _http_error},
                    lifespan=lifespan)
    # "/status/" is not "/status": a JSON 404 (api.md §1.3), not a redirect built from the
    # request's Host header that a client must follow (and re-POST) to get anywhere
    app.router.redirect_slashes = False
    app.state.api = api
    app.state.rate_limiter = RateLimiter()
    app.add_middleware(ApiMiddleware, api=api)
    return app
