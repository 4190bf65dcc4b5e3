"""http_url and endpoint downloads (delivery.md §9.4-9.5) over one shared httpx client."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx

from mail_proxy import content_encoding as decoding
from mail_proxy.delivery.attachments import guard
from mail_proxy.delivery.attachments.limits import ItemMeter, permanent, transient
from mail_proxy.manager.fields import bearer_token_problem

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_TRANSIENT_STATUS = {408, 429}


def auth_headers(auth: dict[str, Any] | None, name: str = "") -> dict[str, str]:
    """Authorization header for `{"method": "bearer"|"basic"|"none", ...}`.

    A credential stored before enqueue and tenant checks refused what a header cannot carry
    (a token with "…" in it) fails the attachment permanently with a sentence that never
    quotes it, instead of escaping as httpx's UnicodeEncodeError, which shows the character.
    """
    if not auth:
        return {}
    if auth.get("method") == "bearer":
        token = str(auth.get("token") or "")
        if bearer_token_problem(token) is not None:
            raise permanent(name, "attachment_error", "the bearer token of its auth cannot be "
                            "sent in an HTTP header (it must be visible ASCII characters only)")
        return {"Authorization": f"Bearer {token}"}
    if auth.get("method") == "basic":
        try:
            raw = f"{auth['user']}:{auth['password']}".encode()
        except UnicodeEncodeError:
            raise permanent(name, "attachment_error", "the user or password of its auth is "
                            "not valid Unicode text") from None
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {}


def new_client(timeout: float) -> httpx.AsyncClient:
    # No keep-alive: connections are opened to a checked IP with a per-request SNI name,
    # and a pooled connection keyed by IP could otherwise serve another host name that was
    # never verified against that connection's certificate.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,
    )


class Downloader:
    """One request with manual redirects, the destination check and streamed size caps."""

    def __init__(self, client: httpx.AsyncClient, user_agent: str, timeout: float) -> None:
        self.client = client
        self.user_agent = user_agent
        self.timeout = timeout  # per network phase; the caller bounds the whole fetch

    async def download(self, url: str, *, name: str, meter: ItemMeter, allow_private: bool,
                       auth: dict[str, Any] | None, post_path: str | None = None,
                       exempt_origin: str | None = None) -> bytes:
        """GET `url`, or POST `{"storage_path": post_path}` when `post_path` is given.

        `exempt_origin` names an origin (the tenant's own URL) that skips the destination
        check; redirects elsewhere are checked like any other URL.
        """
        target = self._parse(url, name)
        method = "GET" if post_path is None else "POST"
        body = None if post_path is None else json.dumps({"storage_path": post_path}).encode()
        origin = _origin(target)
        for _ in range(MAX_REDIRECTS + 1):
            extra = auth_headers(auth, name) if _origin(target) == origin else {}
            check = _origin(target) != exempt_origin
            response = await self._send(target, method, body, extra, name=name, check=check,
                                        allow_private=allow_private)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    target = self._parse(str(target.join(location)), name)
                    if response.status_code == 303 or (
                            response.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                self._raise_for_status(response, target, name)
                return await _read(response, meter, name, _host(target))
            finally:
                await response.aclose()
        raise permanent(name, "attachment_error", f"more than {MAX_REDIRECTS} redirects from "
                                                  f"{_host(self._parse(url, name))}")

    async def _send(self, target: httpx.URL, method: str, body: bytes | None,
                    extra: dict[str, str], *, name: str, check: bool,
                    allow_private: bool) -> httpx.Response:
        # Only what _read can inflate in bounded steps (httpx would offer br or zstd when
        # their libraries happen to be installed).
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": decoding.ACCEPT, **extra}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request_url, extensions = target, {}
        if check:
            port = target.port or (443 if target.scheme == "https" else 80)
            try:
                address = await guard.checked_address(target.host, port,
                                                       allow_private=allow_private)
            except guard.DestinationRefused as exc:
                raise permanent(name, "url_not_allowed", str(exc)) from None
            except guard.ResolutionFailed as exc:
                raise transient(name, str(exc)) from None
            # Connect to the checked address; the name still goes in Host and SNI, so
            # virtual hosting and certificate checks see what the client asked for.
            request_url = target.copy_with(host=str(address))
            headers["Host"] = target.netloc.decode("ascii")
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host
        request = self.client.build_request(method, request_url, headers=headers, content=body,
                                            extensions=extensions, timeout=self.timeout)
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise transient(name, f"timed out talking to {_host(target)}") from None
        except httpx.TransportError as exc:
            raise transient(name, f"cannot reach {_host(target)}: {_describe(exc)}") from None

    @staticmethod
    def _parse(url: str, name: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise permanent(name, "attachment_error", f"invalid URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise permanent(name, "attachment_error",
                            f"'{parsed.scheme}' URLs are not fetched; only http and https")
        return parsed

    @staticmethod
    def _raise_for_status(response: httpx.Response, target: httpx.URL, name: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        text = f"HTTP {status} from {_host(target)}"
        if status in _TRANSIENT_STATUS or status >= 500:
            raise transient(name, text)
        raise permanent(name, "attachment_error", text)


async def _read(response: httpx.Response, meter: ItemMeter, name: str, host: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit():
        meter.declare(int(declared))
    try:
        decoder = decoding.decoder_for(response.headers.get("content-encoding"))
    except decoding.BodyDecodingError as exc:
        raise transient(name, f"{exc} from {host}") from None
    # BytesIO hands its buffer over on getvalue(), so the body is held once, not twice.
    buffer = io.BytesIO()
    raw = piece = b""
    try:
        # Raw bytes, inflated here step by step: every step is metered before the next.
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                meter.add(len(piece))
                buffer.write(piece)
        decoder.finish()
        return buffer.getvalue()
    except httpx.TimeoutException:
        raise transient(name, "timed out while downloading") from None
    except httpx.TransportError as exc:
        raise transient(name, f"download interrupted: {_describe(exc)}") from None
    except decoding.BodyDecodingError as exc:
        # No row of delivery.md §9.9 names it; like a 5xx it is the source's fault, and
        # may be fixed there within the retry window.
        raise transient(name, f"{exc} from {host}") from None
    finally:
        # A failure's traceback keeps this frame alive, maybe until a full garbage
        # collection: it must not keep the bytes read so far with it.
        buffer.close()
        del raw, piece


def origin_of(url: str) -> str | None:
    """`scheme://host:port` of `url`, or None when it does not parse."""
    try:
        return _origin(httpx.URL(url))
    except httpx.InvalidURL:
        return None


def _origin(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.scheme}://{url.host}:{port}"


def _host(url: httpx.URL) -> str:
    return url.host


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
