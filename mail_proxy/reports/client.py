"""The HTTP side of a report call (reports.md §1-§4): headers, the POST, the answer.

One ``httpx.AsyncClient`` serves every tenant. The whole call (connect, send, read) is
bounded by one deadline; redirects are never followed, so a 3xx is just a failed call.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from mail_proxy import __version__
from mail_proxy.content_encoding import ACCEPT, BodyDecodingError, decoder_for
from mail_proxy.jsonfast import loads_strict
from mail_proxy.manager.fields import bearer_token_problem
from mail_proxy.reports import signing

log = logging.getLogger("mail_proxy.reports")

USER_AGENT = f"mail-proxy/{__version__}"
MAX_ANSWER_BYTES = 1 << 20  # an acknowledgement is tiny; never buffer an endless body
OK, HTTP_ERROR, TIMEOUT, CONNECTION_ERROR = "ok", "http_error", "timeout", "connection_error"


@dataclass
class Answer:
    """What a 2xx body asked for; fields with the wrong type read as absent."""

    queued: int = 0
    next_sync_after: int | None = None
    error: set[str] = field(default_factory=set)
    not_found: set[str] = field(default_factory=set)


@dataclass
class CallResult:
    outcome: str  # OK | HTTP_ERROR | TIMEOUT | CONNECTION_ERROR
    seconds: float
    status: int | None = None
    answer: Answer = field(default_factory=Answer)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def sync_url(tenant: dict[str, Any]) -> str:
    base = str(tenant["client_base_url"]).rstrip("/")
    return base + (tenant.get("client_sync_path") or "/mail-proxy/sync")


class UnsendableCredential(ValueError):
    """The tenant's stored ``client_auth`` cannot be put in an HTTP header.

    The API and the CLI refuse such credentials since 2026-11-24; one stored before (a
    bearer token with "…" in it) makes each call fail like a connection error, with a
    message that names the field and never the secret.
    """


def auth_headers(auth: dict[str, Any] | None) -> dict[str, str]:
    auth = auth or {}
    if auth.get("method") == "bearer" and auth.get("token"):
        token = str(auth["token"])
        if bearer_token_problem(token) is not None:
            raise UnsendableCredential(
                "client_auth.token cannot be sent in an HTTP header (it must be visible ASCII "
                "characters only); set the tenant's client_auth again")
        return {"Authorization": f"Bearer {token}"}
    if auth.get("method") == "basic":
        try:
            raw = f"{auth.get('user') or ''}:{auth.get('password') or ''}".encode()
        except UnicodeEncodeError:
            raise UnsendableCredential(
                "client_auth.user or client_auth.password is not valid Unicode text; set the "
                "tenant's client_auth again") from None
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {}


def request_headers(tenant: dict[str, Any], body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               **auth_headers(tenant.get("client_auth"))}
    if tenant.get("signing_secret"):
        headers[signing.HEADER] = signing.sign(tenant["signing_secret"], body)
    return headers


def _ids(value: Any) -> set[str]:
    if not isinstance(value, list):
        return set()
    # Numbers are accepted too: a client whose ids look numeric may echo them unquoted.
    return {str(v) for v in value
            if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))}


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def parse_answer(raw: bytes, where: str) -> Answer:
    try:
        # strict: a client's answer nested past the parser's recursion, or holding ids that
        # are not Unicode text, must read as "not JSON", not stop the reporter
        data = loads_strict(raw) if raw.strip() else None
    except ValueError:
        data = None
        log.warning("report answer from tenant %s is not JSON; acknowledging the call "
                    "anyway", where)
    if not isinstance(data, dict):
        return Answer()
    queued = _number(data.get("queued"))
    return Answer(queued=max(queued or 0, 0), next_sync_after=_number(data.get("next_sync_after")),
                  error=_ids(data.get("error")), not_found=_ids(data.get("not_found")))


class ReportClient:
    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # trust_env off: a proxy variable in the service environment must not silently
            # reroute calls that carry tenant credentials.
            self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float,
                   label: str) -> CallResult:
        """One call; ``label`` names the tenant in logs (the URL may hold credentials).

        Never raises (but for cancellation): whatever goes wrong is a failed call with an
        outcome of metrics.md §5, so that it is counted, logged and backed off like any other.
        """
        started = time.monotonic()

        def done(outcome: str, **kw: Any) -> CallResult:
            return CallResult(outcome=outcome, seconds=time.monotonic() - started, **kw)

        try:
            async with asyncio.timeout(timeout):
                status, raw = await self._exchange(url, body, headers, timeout, label)
        except (TimeoutError, httpx.TimeoutException):
            return done(TIMEOUT, detail=f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return done(CONNECTION_ERROR, detail=f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return done(CONNECTION_ERROR, detail=str(exc))
        except Exception as exc:
            # The call could not be made or completed here (for example a header httpx cannot
            # encode). Only the type is kept: such messages quote the values involved, and
            # the headers hold the tenant's credentials.
            return done(CONNECTION_ERROR,
                        detail=f"the call could not be made ({type(exc).__name__})")
        if not 200 <= status < 300:
            return done(HTTP_ERROR, status=status, detail=f"HTTP {status}")
        return done(OK, status=status, answer=parse_answer(raw, label))

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str], timeout: float,
                        label: str) -> tuple[int, bytes]:
        # only the encodings _answer_body inflates itself
        request = self._client().build_request(
            "POST", url, content=body, headers={"Accept-Encoding": ACCEPT, **headers},
            timeout=httpx.Timeout(timeout))
        response = await self._client().send(request, stream=True)
        try:
            if not 200 <= response.status_code < 300:
                return response.status_code, b""
            return response.status_code, await _answer_body(response, label)
        finally:
            await response.aclose()


async def _answer_body(response: httpx.Response, label: str) -> bytes:
    """The body of a 2xx, or b"" (no fields) when it is too long or cannot be decoded.

    The status already acknowledged the call (reports.md §4): a body in a broken
    Content-Encoding is read like one that is not JSON, never as a failed call that would
    leave the events unacknowledged and send them again and again.
    """
    # Raw bytes, inflated in bounded steps: httpx would inflate each read whole, so a small
    # compressed answer could become hundreds of MB before the size check saw it.
    chunks, size = [], 0
    try:
        decoder = decoder_for(response.headers.get("content-encoding"))
        async for raw in response.aiter_raw():
            for chunk in decoder.feed(raw):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    log.warning("report answer from tenant %s exceeds %d bytes; ignoring "
                                "its fields", label, MAX_ANSWER_BYTES)
                    return b""
                chunks.append(chunk)
        decoder.finish()
    except BodyDecodingError as exc:
        log.warning("report answer from tenant %s cannot be decoded (%s); acknowledging the "
                    "call anyway", label, exc)
        return b""
    except httpx.TransportError as exc:
        # a 2xx whose body was cut off (the connection closed before Content-Length bytes):
        # the status still acknowledged the call (reports hunt: it counted as a connection
        # error, and a receiver that always answers so got the same events for ever)
        log.warning("report answer from tenant %s was cut off (%s); acknowledging the call "
                    "anyway", label, exc or type(exc).__name__)
        return b""
    return b"".join(chunks)
