"""Fixtures for the data commands: a real instance folder, the CLI run in-process, and SMTP
servers on their own event loop in a thread (the CLI runs ``asyncio.run`` itself)."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mail_proxy.cli import run
from mail_proxy.instance.config import ProcessConfig, create_instance


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cli("main", "tenants", "list", stdin="secret\\n")`` → Result(code, out, err)."""

    def call(*argv: str, stdin: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = run(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture
def instance() -> ProcessConfig:
    return create_instance("main", "127.0.0.1", free_port(), None)


@pytest.fixture
def tenant(cli: Any, instance: ProcessConfig) -> str:
    r = cli("main", "tenants", "add", "acme", "--name", "Acme", "--no-api-key")
    assert r.code == 0, r.err
    return "acme"


class ThreadedRecordingServer:
    """``RecordingSmtpServer`` running on a private loop in a daemon thread."""

    def __init__(self, **kwargs: Any) -> None:
        from tests.support.smtp_server import RecordingSmtpServer

        self.loop = asyncio.new_event_loop()
        self.server = RecordingSmtpServer(**kwargs)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None),
                                         self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def ca() -> Any:
    import trustme

    return trustme.CA()


@pytest.fixture
def starttls_server(ca: Any) -> Iterator[Any]:
    with ThreadedRecordingServer(tls="starttls", ca=ca, user="mailer",
                                 password="s3cret-smtp-pass") as server:
        yield server


@pytest.fixture
def ca_file(ca: Any, tmp_path: Any) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
