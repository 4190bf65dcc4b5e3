"""A raw HTTP/1.1 server on 127.0.0.1 (asyncio streams) that sends canned answers exactly as
scripted, including headers no framework would let through (a gzip Content-Encoding on a
body that is not gzip) and bodies without Content-Length::

    async with RawHttpServer({"/bad": Canned(headers=[("Content-Encoding", "gzip")],
                                             body=b"not gzip")}) as srv:
        httpx.get(srv.url("/bad"))

Every request (method, path, body) is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Canned:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_length: bool = True  # False: the end of the body is the end of the connection


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


class RawHttpServer:
    def __init__(self, routes: dict[str, Canned]) -> None:
        self.routes = routes
        self.requests: list[Seen] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def __aenter__(self) -> RawHttpServer:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:])
                           if k.strip().lower() == "content-length"), 0)
            self.requests.append(Seen(method, path, await reader.readexactly(length)))
            canned = self.routes.get(path.split("?")[0], Canned(status=404))
            await self._answer(writer, canned)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up (a size cap, a timeout): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, canned: Canned) -> None:
        head = [f"HTTP/1.1 {canned.status} X", "Connection: close"]
        head += [f"{k}: {v}" for k, v in canned.headers]
        if canned.content_length:
            head.append(f"Content-Length: {len(canned.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        view = memoryview(canned.body)
        for start in range(0, len(view), 1 << 16):
            writer.write(view[start:start + (1 << 16)])
            await writer.drain()
