"""An SMTP server in its own thread, for tests that drive the CLI in subprocesses."""

from __future__ import annotations

import email
import socket
import threading
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[str] = Counter()
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        data = bytes(envelope.content or b"")
        message_id = email.message_from_bytes(data).get("X-Mail-Proxy-ID", "")
        with self.lock:
            self.ids[message_id] += 1
            self.messages.append(data)
        return "250 2.0.0 OK"


class ThreadedSmtpServer:
    """``with ThreadedSmtpServer() as srv: srv.port, srv.ids`` (X-Mail-Proxy-ID counts)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._recorder = _Recorder()
        self._controller = Controller(self._recorder, hostname="127.0.0.1", port=self.port)

    @property
    def ids(self) -> Counter[str]:
        with self._recorder.lock:
            return Counter(self._recorder.ids)

    def __enter__(self) -> ThreadedSmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
