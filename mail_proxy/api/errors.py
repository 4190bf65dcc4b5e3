"""Exceptions to JSON error answers (api.md §1.3). No error is ever plain text."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mail_proxy.errors import MailProxyError

log = logging.getLogger("mail_proxy.api")
# The database's own words (a PostgreSQL deadlock names process ids and lock types, SQLite
# a file path) are for the operator: logged, at most one line per interval during an
# outage, while the client gets a sentence it can act on.
STORAGE_LOG_INTERVAL = 10.0
_storage_log = {"at": float("-inf"), "quiet": 0}
STORAGE_TEXT = "the database is unavailable or busy; retry later (the worker log has the cause)"


def _log_storage_failure(cause: str, request: Request | None) -> None:
    moment = time.monotonic()
    if moment - _storage_log["at"] < STORAGE_LOG_INTERVAL:
        _storage_log["quiet"] += 1
        return
    quiet, _storage_log["quiet"], _storage_log["at"] = _storage_log["quiet"], 0, moment
    request_id = request.scope.get("request_id") if request is not None else None
    more = f" ({quiet} more since the last line)" if quiet else ""
    log.warning("answered 503 storage_unavailable (request %s): %s%s", request_id, cause,
                more)


class ApiError(MailProxyError):
    """An HTTP error raised by the API layer itself (parsing, auth, limits)."""

    def __init__(self, status: int, code: str, message: str, *, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, detail=detail)
        self.status = status
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error": message, "code": code}
    if detail is not None:
        body["detail"] = detail
    if extra:
        body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if status in (429, 503):
        headers.setdefault("Retry-After", "1")
    if status == 413:
        # The rest of the body was not read: the connection cannot carry another request.
        headers.setdefault("Connection", "close")
    return JSONResponse(body, status_code=status, headers=headers)


def from_exception(exc: Exception, request: Request | None = None) -> Response:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)
    if isinstance(exc, MailProxyError):
        status = exc.status if 400 <= exc.status < 600 else 500
        extra = None
        rejected = getattr(exc, "rejected", None)
        if rejected is not None:
            extra = {"queued": 0, "rejected": rejected}
        message = exc.message
        if exc.code == "storage_unavailable":
            _log_storage_failure(exc.message, request)
            message = STORAGE_TEXT
        elif status >= 500:
            log.error("internal error: %s", exc)
        return error_response(status, exc.code, message, exc.detail, extra=extra)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        text = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail))
        return error_response(exc.status_code, code, text, headers=dict(exc.headers or {}))
    request_id = request.scope.get("request_id") if request is not None else None
    log.exception("internal error (request %s)", request_id)
    return error_response(500, "internal_error", "internal error; see the worker log",
                          detail={"request_id": request_id} if request_id else None)
