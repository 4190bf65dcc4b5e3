"""Failure classification of the SMTP pool against a real, scripted aiosmtpd server."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import trustme

from mail_proxy.delivery.smtp import SendResult, SmtpPools, SmtpTarget
from mail_proxy.errors import (
    DeliveryFailure,
    PermanentFailure,
    ThrottleFailure,
    TransientFailure,
)
from tests.support.smtp_server import RecordingSmtpServer

pytestmark = pytest.mark.timeout(10)

DATA = b"Subject: test\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True, params=[True, False], ids=["pipelined", "one-by-one"])
def pipelining(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every case against a server that offers PIPELINING and one that does not."""
    monkeypatch.setattr(RecordingSmtpServer, "pipelining_default", request.param)
    return bool(request.param)


def target(srv: RecordingSmtpServer | int, **kw: object) -> SmtpTarget:
    port = srv if isinstance(srv, int) else srv.port
    args: dict[str, object] = {"tenant_id": "acme", "account_id": "main", "host": "127.0.0.1",
                               "port": port, "user": None, "password": None, "tls_mode": "none"}
    args.update(kw)
    return SmtpTarget(**args)  # type: ignore[arg-type]


async def fail(pools: SmtpPools, t: SmtpTarget, rcpts: list[str] | None = None) -> DeliveryFailure:
    with pytest.raises(DeliveryFailure) as info:
        await pools.send(t, "sender@acme.test", rcpts or ["ann@example.test"], DATA)
    return info.value


# -- replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "reply", "cls", "code"), [
    ("greeting", "421 4.3.2 Service not available", ThrottleFailure, "throttled"),
    ("greeting", "554 5.3.2 No service here", PermanentFailure, "smtp_permanent"),
    ("ehlo", "550 5.7.1 Go away", PermanentFailure, "smtp_permanent"),
    ("mail", "450 4.2.0 Mailbox busy", TransientFailure, "smtp_transient"),
    ("mail", "451 4.7.1 Try again later", ThrottleFailure, "throttled"),
    ("mail", "452 4.3.1 Rate limit exceeded, slow down", ThrottleFailure, "throttled"),
    ("mail", "553 5.7.1 Sender rejected", PermanentFailure, "smtp_permanent"),
    ("data", "552 5.3.4 Message too big", PermanentFailure, "smtp_permanent"),
    ("data", "554 5.7.1 Spam detected", PermanentFailure, "smtp_permanent"),
    ("data", "451 4.3.0 Local error", ThrottleFailure, "throttled"),
    ("data", "450 4.7.0 Greylisted", TransientFailure, "smtp_transient"),
])
async def test_reply_classification(pools: SmtpPools, stage: str, reply: str,
                                    cls: type[DeliveryFailure], code: str) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(**{stage: reply})
        failure = await fail(pools, target(srv))
    assert type(failure) is cls
    assert failure.code == code
    assert failure.message == reply  # "<code> <enhanced> <text>" (messages.md §7)
    assert failure.smtp_code == int(reply[:3])
    assert srv.messages == []


async def test_rejected_data_keeps_the_connection(pools: SmtpPools) -> None:
    """A reply to the end of the message ends the transaction: no RSET is needed."""
    async with RecordingSmtpServer() as srv:
        srv.script(data="552 5.3.4 Message too big")
        await fail(pools, target(srv))
        srv.reset_script()
        result = await pools.send(target(srv), "s@acme.test", ["ann@example.test"], DATA)
    assert result.smtp_code == 250
    assert srv.commands["RSET"] == 0
    assert srv.connections == 1


async def test_some_recipients_refused_is_a_partial_success(pools: SmtpPools) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(rcpt={"bad@example.test": "550 5.1.1 User unknown",
                         "full@example.test": "452 4.2.2 Mailbox full"})
        result = await pools.send(target(srv), "s@acme.test",
                                  ["ok@example.test", "bad@example.test", "full@example.test"],
                                  DATA)
    assert result == SendResult(
        accepted=["ok@example.test"], smtp_code=250,
        refused=[{"address": "bad@example.test", "smtp_code": 550,
                  "message": "5.1.1 User unknown"},
                 {"address": "full@example.test", "smtp_code": 452,
                  "message": "4.2.2 Mailbox full"}])
    assert [m.rcpt_tos for m in srv.messages] == [["ok@example.test"]]


async def test_all_recipients_refused_5xx_is_permanent(pools: SmtpPools) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(rcpt={"a@example.test": "550 5.1.1 User unknown",
                         "b@example.test": "553 5.1.3 Bad address"})
        failure = await fail(pools, target(srv), ["a@example.test", "b@example.test"])
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "all_recipients_refused"
    assert failure.message == "550 5.1.1 User unknown"
    assert [r["smtp_code"] for r in failure.refused] == [550, 553]
    assert srv.commands["DATA"] == 0  # no DATA when nobody accepted


async def test_all_recipients_refused_with_a_4xx_is_transient(pools: SmtpPools) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(rcpt={"a@example.test": "550 5.1.1 User unknown",
                         "b@example.test": "452 4.5.3 Too many recipients"})
        failure = await fail(pools, target(srv), ["a@example.test", "b@example.test"])
    assert type(failure) is TransientFailure
    assert failure.code == "smtp_transient"
    assert failure.smtp_code == 452


async def test_rcpt_421_throttles_the_whole_message(pools: SmtpPools) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(rcpt={"b@example.test": "421 4.7.0 Too many connections"})
        failure = await fail(pools, target(srv), ["a@example.test", "b@example.test"])
    assert isinstance(failure, ThrottleFailure)
    assert srv.messages == []


# -- AUTH -------------------------------------------------------------------------------


async def test_auth_success_uses_credentials(pools: SmtpPools) -> None:
    async with RecordingSmtpServer(user="mailer", password="s3cret") as srv:
        await pools.send(target(srv, user="mailer", password="s3cret"), "s@acme.test",
                         ["a@example.test"], DATA)
    assert srv.messages[0].login == "mailer"


async def test_auth_535_is_permanent_with_user_named(pools: SmtpPools) -> None:
    async with RecordingSmtpServer(user="mailer", password="s3cret") as srv:
        failure = await fail(pools, target(srv, user="mailer", password="wrong"))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "auth_failed"
    assert failure.message == "535 5.7.8 authentication failed for user 'mailer'"
    assert "wrong" not in failure.message


async def test_auth_454_is_temporary(pools: SmtpPools) -> None:
    async with RecordingSmtpServer(user="mailer", password="s3cret") as srv:
        srv.script(auth_fail="454 4.7.0 Temporary authentication failure")
        failure = await fail(pools, target(srv, user="mailer", password="s3cret"))
    assert type(failure) is TransientFailure
    assert failure.code == "auth_temporary"


async def test_credentials_without_server_auth(pools: SmtpPools) -> None:
    async with RecordingSmtpServer(user="mailer", password="s3cret") as srv:
        srv.script(offer_auth=False)
        failure = await fail(pools, target(srv, user="mailer", password="s3cret"))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "auth_unsupported"


# -- connection level -------------------------------------------------------------------


async def test_disconnect_during_data_is_transient_and_discards(pools: SmtpPools) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(disconnect_during_data=True)
        failure = await fail(pools, target(srv))
        assert type(failure) is TransientFailure
        assert failure.code == "connection_failed"
        srv.reset_script()
        await pools.send(target(srv), "s@acme.test", ["a@example.test"], DATA)
    assert srv.connections == 2


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = SmtpPools(ehlo_name="proxy.test", connect_timeout=2)
    failure = await fail(p, target(port))
    assert p.stats() == {("acme", "main"): {"idle": 0, "busy": 0}}  # slot given back
    await p.close()
    assert type(failure) is TransientFailure
    assert failure.code == "connection_failed"
    assert failure.message == f"connection refused by 127.0.0.1:{port}"


async def test_silent_server_times_out_on_connect() -> None:
    p = SmtpPools(ehlo_name="proxy.test", connect_timeout=0.3)
    async with RecordingSmtpServer() as srv:
        srv.script(hang="greeting")
        failure = await fail(p, target(srv))
    await p.close()
    assert type(failure) is TransientFailure
    assert failure.code == "timeout"


async def test_server_stuck_in_data_times_out_on_send() -> None:
    p = SmtpPools(ehlo_name="proxy.test", connect_timeout=2, send_timeout=0.3)
    async with RecordingSmtpServer() as srv:
        srv.script(hang="data")
        failure = await fail(p, target(srv))
        assert p.stats()[("acme", "main")] == {"idle": 0, "busy": 0}  # discarded
    await p.close()
    assert failure.code == "timeout"
    assert isinstance(failure, TransientFailure)


# -- TLS --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_modes_with_trusted_ca(pools: SmtpPools, ca: trustme.CA, ca_file: str,
                                         mode: str) -> None:
    async with RecordingSmtpServer(tls=mode, ca=ca, user="u", password="p") as srv:
        await pools.send(target(srv, tls_mode=mode, tls_ca_file=ca_file, user="u",
                                password="p"), "s@acme.test", ["a@example.test"], DATA)
    assert srv.messages[0].tls is True
    assert srv.messages[0].login == "u"


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_wrong_host_name_is_a_certificate_error(pools: SmtpPools, ca: trustme.CA,
                                                      ca_file: str, mode: str) -> None:
    async with RecordingSmtpServer(tls=mode, ca=ca, cert_hosts=("wrong.example",)) as srv:
        failure = await fail(pools, target(srv, tls_mode=mode, tls_ca_file=ca_file))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "tls_certificate_error"
    assert failure.message.startswith("TLS certificate verification failed for 127.0.0.1: ")


async def test_untrusted_ca_is_a_certificate_error(pools: SmtpPools, ca_file: str) -> None:
    async with RecordingSmtpServer(tls="starttls", ca=trustme.CA()) as srv:
        failure = await fail(pools, target(srv, tls_mode="starttls", tls_ca_file=ca_file))
    assert failure.code == "tls_certificate_error"
    assert isinstance(failure, PermanentFailure)


async def test_verify_off_accepts_a_bad_certificate_and_warns(
        pools: SmtpPools, ca: trustme.CA, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with RecordingSmtpServer(tls="tls", ca=ca, cert_hosts=("wrong.example",)) as srv:
        await pools.send(target(srv, tls_mode="tls", tls_verify=False), "s@acme.test",
                         ["a@example.test"], DATA)
    assert len(srv.messages) == 1
    assert any("acme/main" in r.getMessage() and "insecure" in r.getMessage()
               for r in caplog.records)


async def test_starttls_not_offered(pools: SmtpPools, ca: trustme.CA, ca_file: str) -> None:
    async with RecordingSmtpServer(tls="starttls", ca=ca) as srv:
        srv.script(offer_starttls=False)
        failure = await fail(pools, target(srv, tls_mode="starttls", tls_ca_file=ca_file))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "starttls_unavailable"


async def test_implicit_tls_against_a_plain_port(pools: SmtpPools, ca_file: str) -> None:
    async with RecordingSmtpServer() as srv:
        failure = await fail(pools, target(srv, tls_mode="tls", tls_ca_file=ca_file))
    assert isinstance(failure, PermanentFailure)
    assert failure.code == "tls_error"


async def test_tls_none_never_upgrades(pools: SmtpPools, ca: trustme.CA) -> None:
    async with RecordingSmtpServer(tls="starttls", ca=ca) as srv:
        await pools.send(target(srv), "s@acme.test", ["a@example.test"], DATA)
    assert srv.messages[0].tls is False
    assert srv.ehlo_names == ["proxy.test"]


async def test_mail_from_names_the_size_so_an_oversized_message_is_refused_before_upload(
        core, smtp_server) -> None:
    """RFC 1870: without SIZE= a server whose limit a message passes still received all of
    it before answering 552 (3 MB against Postfix's 20 kB limit, interop hunt)."""
    from tests.integration.test_engine_audit_helpers import make, message, settle
    from tests.support import factories as f

    await f.tenant(core)
    await f.account(core, smtp_server.port)
    await f.enqueue(core, f.message(1))
    d = make(core)
    try:
        await settle(d)
        assert (await message(core, "m-1"))["status"] == "sent"
        [options] = smtp_server.mail_options
        assert len(options) == 1 and options[0].startswith("SIZE=")
        assert int(options[0][5:]) == len(smtp_server.messages[0].data)  # the message as sent
        smtp_server.size_limit = 2000
        await d.smtp.close()
        d = make(core)
        await f.enqueue(core, f.message(2, body="x" * 5000))
        await settle(d)
        refused = await message(core, "m-2")
        assert refused["status"] == "error" and refused["last_smtp_code"] == 552
        assert smtp_server.commands["DATA"] == 1  # only the first message's
    finally:
        await d.smtp.close()
