"""Every fetch mode against real sources: a temp dir and a Starlette app served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mail_proxy.delivery.attachments import (
    AttachmentFetcher,
    TenantFetchContext,
    normalise_attachments,
)
from mail_proxy.delivery.attachments.http import Downloader
from mail_proxy.delivery.attachments.limits import MessageBudget
from mail_proxy.errors import PermanentFailure, TransientFailure
from mail_proxy.settings import RuntimeSettings

pytestmark = pytest.mark.timeout(20)

FILES = {"inv.pdf": b"%PDF-1.4 invoice 1001", "logo.png": b"\x89PNG fake", "big.bin": b"B" * 5000}
TOKEN = "s3cret-token"
BASIC = "Basic " + base64.b64encode(b"mailer:pa55").decode()


class Source:
    """The remote side: serves files and a tenant endpoint, and counts every call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seen: list[dict[str, str]] = []
        self.active = 0
        self.peak = 0
        self.endpoint_files = dict(FILES)
        self.app = Starlette(routes=[
            Route("/files/{name}", self.files),
            Route("/status/{code:int}", self.status),
            Route("/redirect/{n:int}", self.redirect),
            Route("/declared", self.declared),
            Route("/chunked", self.chunked),
            Route("/slow/{seconds}", self.slow),
            Route("/bearer", self.endpoint, methods=["POST"]),
            Route("/basic", self.endpoint, methods=["POST"]),
        ])

    def _note(self, request: Request) -> None:
        self.calls[request.url.path] += 1
        self.seen.append(dict(request.headers))

    async def files(self, request: Request) -> Response:
        self._note(request)
        name = request.path_params["name"]
        if name not in FILES:
            return Response("no such file", status_code=404)
        return Response(FILES[name], media_type="application/octet-stream")

    async def status(self, request: Request) -> Response:
        self._note(request)
        return Response("status", status_code=request.path_params["code"])

    async def redirect(self, request: Request) -> Response:
        self._note(request)
        n = request.path_params["n"]
        target = f"/redirect/{n - 1}" if n > 1 else "/files/inv.pdf"
        return Response(status_code=302, headers={"Location": target})

    async def declared(self, request: Request) -> Response:
        self._note(request)
        return Response(b"x" * 2000)  # Content-Length: 2000

    async def chunked(self, request: Request) -> StreamingResponse:
        self._note(request)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(50):
                yield b"y" * 100
        return StreamingResponse(body())

    async def slow(self, request: Request) -> Response:
        self._note(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(float(request.path_params["seconds"]))
        finally:
            self.active -= 1
        return Response(b"slow")

    async def endpoint(self, request: Request) -> Response:
        self._note(request)
        wanted = f"Bearer {TOKEN}" if request.url.path == "/bearer" else BASIC
        if request.headers.get("authorization") != wanted:
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        body = await request.json()
        content = self.endpoint_files.get(body["storage_path"])
        if content is None:
            return Response(status_code=404)
        return Response(content)


@pytest.fixture
async def source() -> AsyncIterator[tuple[Source, str]]:
    src = Source()
    config = uvicorn.Config(src.app, host="127.0.0.1", port=0, log_level="error",
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    # A socket bound and listening before the server starts queues early connections,
    # so the test never races the server's start-up.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield src, f"http://localhost:{port}"
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
async def tls_source(tmp_path: Path) -> AsyncIterator[tuple[Source, str, ssl.SSLContext]]:
    """The same app over TLS, with a certificate naming only `localhost`."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    src = Source()
    config = uvicorn.Config(src.app, host="127.0.0.1", port=0, log_level="error",
                            lifespan="off", ssl_certfile=str(cert_file),
                            ssl_keyfile=str(key_file), timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield src, f"https://localhost:{sock.getsockname()[1]}", client_ctx
    server.should_exit = True
    await task
    sock.close()


def settings(**changes: Any) -> RuntimeSettings:
    base = {"allow_private_urls": True, **changes}
    return dataclasses.replace(RuntimeSettings(), **base)


def tenant(base_url: str | None = None, auth: dict[str, Any] | None = None,
           tenant_id: str = "acme", path: str = "/bearer",
           created_at: int | None = None) -> TenantFetchContext:
    return TenantFetchContext(tenant_id=tenant_id, base_url=base_url, attachment_path=path,
                              client_auth=auth, created_at=created_at)


@pytest.fixture
async def make_fetcher(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[AttachmentFetcher] = []
    outcomes: list[tuple[str, str]] = []

    def make(cfg: RuntimeSettings | None = None, cache_dir: Path | None = None):
        fetcher = AttachmentFetcher(cfg or settings(), cache_dir=cache_dir, version="9.9.9",
                                    on_fetch=lambda mode, outcome: outcomes.append((mode, outcome)))
        made.append(fetcher)
        return fetcher
    make.outcomes = outcomes  # type: ignore[attr-defined]
    yield make
    for fetcher in made:
        await fetcher.close()


def norm(items: list[dict[str, Any]], cfg: RuntimeSettings, base_url: str | None = None):
    return normalise_attachments(items, settings=cfg, tenant_base_url=base_url)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- base64 and filesystem --------------------------------------------------------------------

async def test_base64_and_mime_types(make_fetcher: Any) -> None:
    cfg = settings()
    items = norm([{"filename": "a.txt", "storage_path": "base64:aGVsbG8"},
                  {"filename": "b.weird", "storage_path": "base64:aGk=", "content_id": "c1"},
                  {"filename": "c", "storage_path": "aGk=", "fetch_mode": "base64",
                   "mime_type": "image/png"}], cfg)
    out = await make_fetcher(cfg).fetch_all(tenant(), items)
    assert [(a.filename, a.content, a.mime_type, a.content_id) for a in out] == [
        ("a.txt", b"hello", "text/plain", None),
        ("b.weird", b"hi", "application/octet-stream", "c1"),
        ("c", b"hi", "image/png", None)]
    assert make_fetcher.outcomes == [("base64", "ok")] * 3


async def test_filesystem_reads_inside_the_root_only(tmp_path: Path, make_fetcher: Any) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "doc.pdf").write_bytes(b"document")
    (outside / "secret.txt").write_bytes(b"secret")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "sub").mkdir()
    cfg = settings(attachment_roots=[str(root)], max_attachment_bytes=100)
    fetcher = make_fetcher(cfg)

    async def fetch(path: str) -> bytes:
        [item] = norm([{"filename": "f.pdf", "storage_path": path}], cfg)
        return (await fetcher.fetch_all(tenant(), [item]))[0].content

    assert await fetch(str(root / "doc.pdf")) == b"document"
    cases = {str(root / "escape.txt"): "path_not_allowed",
             str(root / "missing.pdf"): "attachment_not_found",
             str(root / "sub"): "attachment_error"}
    for path, code in cases.items():
        with pytest.raises(PermanentFailure) as info:
            await fetch(path)
        assert info.value.code == code, path
        assert str(info.value).startswith("attachment 'f.pdf': ")
    (root / "huge.bin").write_bytes(b"h" * 101)
    with pytest.raises(PermanentFailure, match="max_attachment_bytes") as info:
        await fetch(str(root / "huge.bin"))
    assert info.value.code == "attachment_too_large"


# -- http_url --------------------------------------------------------------------------------

async def test_http_url_download_sends_user_agent_and_host(source: Any, make_fetcher: Any) -> None:
    src, base = source
    cfg = settings()
    items = norm([{"filename": "inv.pdf", "storage_path": f"{base}/files/inv.pdf",
                   "auth": {"method": "bearer", "token": "t1"}}], cfg)
    [got] = await make_fetcher(cfg).fetch_all(tenant(), items)
    assert got.content == FILES["inv.pdf"]
    assert got.mime_type == "application/pdf"
    headers = src.seen[-1]
    assert headers["user-agent"] == "mail-proxy/9.9.9"
    assert headers["host"] == base.removeprefix("http://")  # name kept, IP connected to
    assert headers["authorization"] == "Bearer t1"


async def test_https_connects_to_the_checked_address_with_the_name_for_sni(
        tls_source: Any) -> None:
    src, base, ctx = tls_source
    # Same pool policy as new_client(): no keep-alive, so each name gets its own handshake.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=ctx, trust_env=False, limits=limits) as client:
        downloader = Downloader(client, "mail-proxy/test", 5.0)
        meter = MessageBudget(10_000, 10_000).meter("inv.pdf")
        content = await downloader.download(f"{base}/files/inv.pdf", name="inv.pdf",
                                            meter=meter, allow_private=True, auth=None)
        assert content == FILES["inv.pdf"]
        assert src.seen[-1]["host"] == base.removeprefix("https://")
        # The certificate names only localhost: reaching the same IP under another name
        # must fail verification rather than be accepted because the IP matched.
        with pytest.raises(TransientFailure, match="cannot reach 127"):
            await downloader.download(base.replace("localhost", "127.0.0.1") + "/files/x",
                                      name="x", meter=meter, allow_private=True, auth=None)


async def test_guard_refuses_loopback_when_private_urls_are_off(source: Any,
                                                                make_fetcher: Any) -> None:
    src, base = source
    cfg = settings(allow_private_urls=False)
    for url in (f"{base}/files/inv.pdf", base.replace("localhost", "127.0.0.1") + "/files/x"):
        items = norm([{"filename": "inv.pdf", "storage_path": url}], cfg)
        with pytest.raises(PermanentFailure) as info:
            await make_fetcher(cfg).fetch_all(tenant(), items)
        assert info.value.code == "url_not_allowed"
    assert src.calls == Counter()  # nothing reached the server


@pytest.mark.parametrize(("path", "failure", "code", "text"), [
    ("/files/nope.pdf", PermanentFailure, "attachment_error",
     "attachment 'inv.pdf': HTTP 404 from localhost"),
    ("/status/503", TransientFailure, "attachment_unavailable",
     "attachment 'inv.pdf': HTTP 503 from localhost"),
    ("/status/429", TransientFailure, "attachment_unavailable", "HTTP 429"),
    ("/redirect/6", PermanentFailure, "attachment_error", "more than 5 redirects"),
    ("/declared", PermanentFailure, "attachment_too_large", "max_attachment_bytes"),
    ("/chunked", PermanentFailure, "attachment_too_large", "max_attachment_bytes"),
])
async def test_http_failures_are_classified(source: Any, make_fetcher: Any, path: str,
                                            failure: type, code: str, text: str) -> None:
    _, base = source
    cfg = settings(max_attachment_bytes=1000)
    items = norm([{"filename": "inv.pdf", "storage_path": base + path}], cfg)
    with pytest.raises(failure) as info:
        await make_fetcher(cfg).fetch_all(tenant(), items)
    assert info.value.code == code
    assert text in str(info.value)


async def test_a_permanent_failure_outranks_a_transient_one(source: Any,
                                                           make_fetcher: Any) -> None:
    _, base = source
    cfg = settings()
    items = norm([{"filename": "a.pdf", "storage_path": f"{base}/status/503"},
                  {"filename": "b.pdf", "storage_path": f"{base}/files/nope.pdf"}], cfg)
    with pytest.raises(PermanentFailure, match=r"attachment 'b\.pdf'"):
        await make_fetcher(cfg).fetch_all(tenant(), items)


async def test_redirects_are_followed_up_to_five(source: Any, make_fetcher: Any) -> None:
    src, base = source
    cfg = settings()
    items = norm([{"filename": "inv.pdf", "storage_path": f"{base}/redirect/5"}], cfg)
    [got] = await make_fetcher(cfg).fetch_all(tenant(), items)
    assert got.content == FILES["inv.pdf"]
    assert sum(src.calls.values()) == 6


async def test_connection_refused_and_timeout_are_transient(source: Any,
                                                            make_fetcher: Any) -> None:
    _, base = source
    cfg = settings(attachment_timeout=1)
    items = norm([{"filename": "s.bin", "storage_path": f"{base}/slow/3"},
                  {"filename": "r.bin", "storage_path": "http://127.0.0.1:9/x"}], cfg)
    for item in items:
        with pytest.raises(TransientFailure) as info:
            await make_fetcher(cfg).fetch_all(tenant(), [item])
        assert info.value.code == "attachment_unavailable"


async def test_concurrency_is_bounded(source: Any, make_fetcher: Any) -> None:
    src, base = source
    cfg = settings(attachment_concurrency=2)
    items = norm([{"filename": f"{i}.bin", "storage_path": f"{base}/slow/0.2?i={i}"}
                  for i in range(5)], cfg)
    out = await make_fetcher(cfg).fetch_all(tenant(), items)
    assert [a.filename for a in out] == [f"{i}.bin" for i in range(5)]
    assert src.peak == 2


async def test_message_total_cap(source: Any, make_fetcher: Any) -> None:
    _, base = source
    cfg = settings(max_message_attachment_bytes=8000)
    items = norm([{"filename": f"{i}.bin", "storage_path": f"{base}/files/big.bin"}
                  for i in range(2)], cfg)
    with pytest.raises(PermanentFailure, match="max_message_attachment_bytes") as info:
        await make_fetcher(cfg).fetch_all(tenant(), items)
    assert info.value.code == "attachment_too_large"


# -- endpoint --------------------------------------------------------------------------------

async def test_endpoint_with_tenant_bearer_and_basic(source: Any, make_fetcher: Any) -> None:
    src, base = source
    cfg = settings(allow_private_urls=False)  # the tenant's own URL is exempt from the guard
    fetcher = make_fetcher(cfg)
    items = norm([{"filename": "inv.pdf", "storage_path": "inv.pdf"}], cfg, base + "/")
    bearer = tenant(base + "/", {"method": "bearer", "token": TOKEN}, path="/bearer")
    assert (await fetcher.fetch_all(bearer, items))[0].content == FILES["inv.pdf"]
    assert src.seen[-1]["content-type"] == "application/json"
    basic = tenant(base, {"method": "basic", "user": "mailer", "password": "pa55"},
                   path="/basic")
    assert (await fetcher.fetch_all(basic, items))[0].content == FILES["inv.pdf"]
    wrong = tenant(base, {"method": "bearer", "token": "nope"})
    with pytest.raises(PermanentFailure, match="HTTP 401") as info:
        await fetcher.fetch_all(wrong, items)
    assert info.value.code == "attachment_error"
    # The attachment's own auth wins over the tenant's.
    own = norm([{"filename": "inv.pdf", "storage_path": "inv.pdf",
                 "auth": {"method": "bearer", "token": TOKEN}}], cfg, base)
    assert (await fetcher.fetch_all(wrong, own))[0].content == FILES["inv.pdf"]


async def test_explicit_endpoint_form_is_guarded(source: Any, make_fetcher: Any) -> None:
    _, base = source
    item = {"filename": "logo.png", "storage_path": f"[{base}/bearer]logo.png",
            "auth": {"method": "bearer", "token": TOKEN}}
    cfg = settings()
    [got] = await make_fetcher(cfg).fetch_all(tenant(), norm([item], cfg))
    assert got.content == FILES["logo.png"]
    strict = settings(allow_private_urls=False)
    with pytest.raises(PermanentFailure) as info:
        await make_fetcher(strict).fetch_all(tenant(), norm([item], strict))
    assert info.value.code == "url_not_allowed"


# -- MD5 and cache ---------------------------------------------------------------------------

async def test_md5_mismatch_is_permanent(source: Any, make_fetcher: Any) -> None:
    _, base = source
    cfg = settings()
    items = norm([{"filename": "inv.pdf", "storage_path": f"{base}/files/inv.pdf",
                   "content_md5": "0" * 32}], cfg)
    with pytest.raises(PermanentFailure) as info:
        await make_fetcher(cfg).fetch_all(tenant(), items)
    assert info.value.code == "attachment_md5_mismatch"


async def test_a_checksum_is_checked_for_inline_content_too(make_fetcher: Any) -> None:
    """Attachment hunt: content_md5 and the {MD5:...} marker were skipped for base64."""
    cfg = settings()
    data = b"inline bytes"
    good = norm([{"filename": "a.txt", "storage_path": "base64:" + base64.b64encode(data).decode(),
                  "content_md5": md5(data)}], cfg)
    assert (await make_fetcher(cfg).fetch_all(tenant(), good))[0].content == data
    for item in ({"filename": "a.txt", "content_md5": "0" * 32},
                 {"filename": "a_{MD5:" + "0" * 32 + "}.txt"}):
        bad = norm([{**item, "storage_path": "base64:" + base64.b64encode(data).decode()}], cfg)
        with pytest.raises(PermanentFailure) as info:
            await make_fetcher(cfg).fetch_all(tenant(), bad)
        assert info.value.code == "attachment_md5_mismatch"


async def test_an_endpoint_without_a_base_url_fails_with_a_delivery_code(
        make_fetcher: Any) -> None:
    """Attachment hunt: the base URL removed after enqueue ended the message with the
    enqueue code endpoint_not_configured, outside delivery.md §4's closed list."""
    cfg = settings()
    items = norm([{"filename": "inv.pdf", "storage_path": "inv.pdf"}], cfg, "http://x.test")
    with pytest.raises(PermanentFailure) as info:
        await make_fetcher(cfg).fetch_all(tenant(None), items)
    assert info.value.code == "attachment_error"
    assert "client_base_url" in str(info.value)


@pytest.mark.parametrize("threshold_kb", [100, 1])  # memory tier, then disk tier
async def test_cache_hit_skips_the_source(source: Any, make_fetcher: Any, tmp_path: Path,
                                          threshold_kb: int) -> None:
    src, base = source
    cfg = settings(cache_disk_threshold_kb=threshold_kb)
    fetcher = make_fetcher(cfg, cache_dir=tmp_path)
    content = FILES["big.bin"]
    items = norm([{"filename": f"big_{{MD5:{md5(content)}}}.bin",
                   "storage_path": f"{base}/files/big.bin"}], cfg)
    first = await fetcher.fetch_all(tenant(), items)
    second = await fetcher.fetch_all(tenant(), items)
    assert first[0].content == second[0].content == content
    assert second[0].filename == "big.bin"
    assert src.calls["/files/big.bin"] == 1
    tier = "memory" if threshold_kb == 100 else "disk"
    assert fetcher.cache_bytes()[tier] == len(content)
    assert make_fetcher.outcomes == [("http_url", "ok"), ("http_url", "cache_hit")]


async def test_tenants_with_the_same_md5_do_not_share(source: Any, make_fetcher: Any) -> None:
    src, base = source
    cfg = settings()
    fetcher = make_fetcher(cfg)
    digest = md5(FILES["inv.pdf"])
    acme = tenant(base, {"method": "bearer", "token": TOKEN}, tenant_id="acme")
    other = tenant(base, {"method": "bearer", "token": TOKEN}, tenant_id="other")
    items = norm([{"filename": "inv.pdf", "storage_path": "inv.pdf", "content_md5": digest}],
                 cfg, base)
    await fetcher.fetch_all(acme, items)
    # The other tenant's source serves different bytes: it must be asked, and its content
    # must be judged on its own, never replaced by acme's cached copy.
    src.endpoint_files["inv.pdf"] = b"other tenant's file"
    with pytest.raises(PermanentFailure) as info:
        await fetcher.fetch_all(other, items)
    assert info.value.code == "attachment_md5_mismatch"
    assert src.calls["/bearer"] == 2
    assert (await fetcher.fetch_all(acme, items))[0].content == FILES["inv.pdf"]
    assert src.calls["/bearer"] == 2


@pytest.mark.parametrize("threshold_kb", [100, 1])  # memory tier, then disk tier
async def test_a_tenant_created_again_does_not_find_the_deleted_ones_documents(
        source: Any, make_fetcher: Any, tmp_path: Path, threshold_kb: int) -> None:
    """Attachment hunt: deleted, then created again under the same id, a tenant got the
    old one's cached documents by naming their MD5 while the URLs answered 404."""
    _src, base = source
    cfg = settings(cache_disk_threshold_kb=threshold_kb)
    fetcher = make_fetcher(cfg, cache_dir=tmp_path)
    digest = md5(FILES["big.bin"])
    items = norm([{"filename": "big.bin", "storage_path": f"{base}/files/big.bin",
                   "content_md5": digest}], cfg)
    await fetcher.fetch_all(tenant(created_at=1000), items)
    gone = norm([{"filename": "big.bin", "storage_path": f"{base}/files/missing.bin",
                  "content_md5": digest}], cfg)
    assert (await fetcher.fetch_all(tenant(created_at=1000), gone))[0].content  # same tenant
    with pytest.raises(PermanentFailure):
        await fetcher.fetch_all(tenant(created_at=2000), gone)  # a new tenant, same id


async def test_update_settings_applies_new_caps(source: Any, make_fetcher: Any) -> None:
    _, base = source
    cfg = settings()
    fetcher = make_fetcher(cfg)
    items = norm([{"filename": "big.bin", "storage_path": f"{base}/files/big.bin"}], cfg)
    assert (await fetcher.fetch_all(tenant(), items))[0].content == FILES["big.bin"]
    fetcher.update_settings(settings(max_attachment_bytes=10, attachment_concurrency=1))
    with pytest.raises(PermanentFailure):
        await fetcher.fetch_all(tenant(), items)
