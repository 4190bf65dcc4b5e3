"""Audit (issue 7): SMTP failures end to end through the dispatcher (delivery.md §4,
messages.md §6-7). Each case checks status, attempts, error code, event and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.integration.test_engine_audit_helpers import deliver, message
from tests.support import factories as f
from tests.support.smtp_server import RecordingSmtpServer

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pem(ca: trustme.CA, tmp_path: Path, name: str = "ca.pem") -> str:
    path = tmp_path / name
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def one(core: Any, port: int, **account: Any) -> dict[str, Any]:
    """Send message m-1 through a fresh dispatcher and return its final record."""
    await f.tenant(core)
    await f.account(core, port, **account)
    await f.enqueue(core, f.message(1))
    await deliver(core, connect_timeout=1, send_timeout=1)
    return await message(core, "m-1")


def check_error(msg: dict[str, Any], code: str, *, attempts: int = 1,
                smtp_code: int | None = None) -> dict[str, Any]:
    assert msg["status"] == "error", msg
    assert msg["attempts"] == attempts
    assert msg["last_error_code"] == code
    assert msg["next_attempt_at"] is None and msg["finished_at"] is not None
    event = msg["events"][-1]
    assert event["event_type"] == "error"
    assert event["description"] == msg["last_error"]
    meta = event["metadata"]
    assert meta["code"] == code and meta["attempt"] == attempts
    assert meta.get("smtp_code") == smtp_code
    return meta


def check_deferred(msg: dict[str, Any], code: str, *, smtp_code: int | None = None) -> None:
    assert msg["status"] == "deferred", msg
    assert msg["attempts"] == 1
    assert msg["last_error_code"] == code
    # first retry: 60 s ± 10 % (delivery.md §5)
    delay = msg["next_attempt_at"] - msg["updated_at"]
    assert 54 - 1 <= delay <= 66 + 1
    event = msg["events"][-1]
    assert event["event_type"] == "deferred"
    assert event["description"] == msg["last_error"]
    assert event["metadata"]["code"] == code
    assert event["metadata"]["attempt"] == 1
    assert event["metadata"]["next_attempt_at"] == msg["next_attempt_at"]
    assert event["metadata"].get("smtp_code") == smtp_code


async def test_535_is_permanent_auth_failed_naming_the_user(core) -> None:
    async with RecordingSmtpServer(user="mailer", password="right") as srv:
        msg = await one(core, srv.port, user="mailer", password="wrong")
    check_error(msg, "auth_failed", smtp_code=535)
    assert msg["last_error"] == "535 5.7.8 authentication failed for user 'mailer'"
    assert "wrong" not in msg["last_error"]
    assert srv.messages == []


@pytest.mark.parametrize("case", ["wrong_host", "untrusted_ca"])
async def test_bad_certificate_is_permanent_tls_certificate_error(
        core, ca: trustme.CA, tmp_path: Path, case: str) -> None:
    hosts = ("wrong.test",) if case == "wrong_host" else ("127.0.0.1",)
    trusted = ca if case == "wrong_host" else trustme.CA()
    async with RecordingSmtpServer(tls="tls", ca=ca, cert_hosts=hosts) as srv:
        msg = await one(core, srv.port, tls_mode="tls", tls_ca_file=pem(trusted, tmp_path))
    check_error(msg, "tls_certificate_error")
    assert msg["last_error"].startswith("TLS certificate verification failed for 127.0.0.1: ")
    assert len(msg["last_error"]) > len("TLS certificate verification failed for 127.0.0.1: ")


async def test_starttls_not_offered_is_permanent(core) -> None:
    async with RecordingSmtpServer() as srv:  # plain server: no STARTTLS in EHLO
        msg = await one(core, srv.port, tls_mode="starttls")
    check_error(msg, "starttls_unavailable")
    assert msg["last_error"] == f"STARTTLS not offered by 127.0.0.1:{srv.port}"


@pytest.mark.parametrize("hang", ["greeting", "data"])
async def test_server_that_never_answers_is_a_transient_timeout(core, hang: str) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(hang=hang)
        msg = await one(core, srv.port)
    check_deferred(msg, "timeout")
    assert msg["last_error"].startswith("timeout after 1 s ")
    assert f"127.0.0.1:{srv.port}" in msg["last_error"]


async def test_slow_end_of_data_is_bounded_by_the_send_timeout(core) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(data_delay=1.5)
        await f.tenant(core)
        await f.account(core, srv.port)
        await f.enqueue(core, f.message(1))
        await deliver(core, connect_timeout=1, send_timeout=5)
    msg = await message(core, "m-1")
    assert msg["status"] == "sent", msg["last_error"]


async def test_disconnect_during_data_is_transient(core) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(disconnect_during_data=True)
        msg = await one(core, srv.port)
    check_deferred(msg, "connection_failed")
    assert msg["last_error"] == f"connection to 127.0.0.1:{srv.port} lost during data"


@pytest.mark.parametrize("reply", ["552 5.3.4 Message too big", "554 5.7.1 Spam detected"])
async def test_5xx_at_data_is_permanent(core, reply: str) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(data=reply)
        msg = await one(core, srv.port)
    code = int(reply[:3])
    check_error(msg, "smtp_permanent", smtp_code=code)
    assert msg["last_error"] == reply and msg["last_smtp_code"] == code


@pytest.mark.parametrize(("where", "reply"), [
    ("data", "450 4.7.0 Greylisted, try again"),
    ("data", "452 4.3.1 Insufficient system storage"),
    ("mail", "450 4.2.0 Mailbox busy"),
    ("rcpt", "452 4.2.2 Mailbox full"),
])
async def test_450_452_are_transient(core, where: str, reply: str) -> None:
    async with RecordingSmtpServer() as srv:
        if where == "rcpt":
            srv.script(rcpt={"rcpt1@example.com": reply})
        else:
            srv.script(**{where: reply})
        msg = await one(core, srv.port)
    code = int(reply[:3])
    check_deferred(msg, "smtp_transient", smtp_code=code)
    assert msg["last_error"] == reply and msg["last_smtp_code"] == code


async def test_legacy_use_tls_maps_to_starttls_and_delivers_over_tls(
        core, ca: trustme.CA, tmp_path: Path) -> None:
    async with RecordingSmtpServer(tls="starttls", ca=ca) as srv:
        await f.tenant(core)
        rep = await f.account(core, srv.port, tls_mode=None, use_tls=True,
                              tls_ca_file=pem(ca, tmp_path))
        assert rep["tls_mode"] == "starttls" and rep["use_tls"] is True
        plain = await f.account(core, srv.port, account_id="plain", tls_mode=None,
                                use_tls=False)
        assert plain["tls_mode"] == "none" and plain["use_tls"] is False
        answer = await f.enqueue(core, f.message(1, account_id="main"),
                                 f.message(2, account_id="plain"))
        assert answer["queued"] == 2
        await deliver(core)
        by_id = {m.data.split(b"X-Mail-Proxy-ID: ")[1].split(b"\r\n")[0]: m
                 for m in srv.messages}
    assert by_id[b"m-1"].tls is True
    assert by_id[b"m-2"].tls is False
    assert (await message(core, "m-1"))["status"] == "sent"


async def test_use_tls_true_on_port_465_means_implicit_tls(core) -> None:
    await f.tenant(core)
    rep = await f.account(core, 465, tls_mode=None, use_tls=True)
    assert rep["tls_mode"] == "tls"
    rep = await f.account(core, 465, tls_mode=None)
    assert rep["tls_mode"] == "tls"
