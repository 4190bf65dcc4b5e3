"""SMTP refusals whose text holds NUL and terminal escapes, end to end on SQLite and on
PostgreSQL (QA hunt, delivery findings 2 and 8); ``core`` is the store tests' fixture,
parametrised over both backends.

PostgreSQL refuses NUL in text: the outcome could not be written, the message became
`internal_error` and was sent again on every retry. The refusal must be recorded after one
attempt with its code, and with the control characters shown escaped.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_engine_audit_helpers import deliver, message
from tests.support import factories as f
from tests.support.smtp_server import RecordingSmtpServer

pytestmark = pytest.mark.timeout(30)


async def one(core: Any, srv: RecordingSmtpServer) -> dict[str, Any]:
    await f.tenant(core)
    await f.account(core, srv.port)
    await f.enqueue(core, f.message(1))
    await deliver(core, connect_timeout=2, send_timeout=2)
    return await message(core, "m-1")


def check_error(msg: dict[str, Any], code: str, smtp_code: int, text: str) -> None:
    assert (msg["status"], msg["last_error_code"]) == ("error", code), msg["last_error"]
    assert msg["attempts"] == 1
    assert msg["last_smtp_code"] == smtp_code
    assert msg["last_error"] == text
    event = msg["events"][-1]
    assert event["event_type"] == "error" and event["description"] == text
    assert event["metadata"]["code"] == code


async def test_refused_recipient_with_nul_and_escape(core: Any) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(rcpt={"rcpt1@example.com": "550 5.1.1 bad\x00nul\x1b[31mRED\x1b[0m"})
        msg = await one(core, srv)
    text = "550 5.1.1 bad\\x00nul\\x1b[31mRED\\x1b[0m"
    check_error(msg, "all_recipients_refused", 550, text)
    [refused] = msg["events"][-1]["metadata"]["refused_recipients"]
    assert refused == {"address": "rcpt1@example.com", "smtp_code": 550,
                       "message": "5.1.1 bad\\x00nul\\x1b[31mRED\\x1b[0m"}


async def test_end_of_data_refusal_with_nul_and_escape(core: Any) -> None:
    async with RecordingSmtpServer() as srv:
        srv.script(data="554 5.7.1 rejected as spam\x00\x1b[2J")
        msg = await one(core, srv)
    check_error(msg, "smtp_permanent", 554, "554 5.7.1 rejected as spam\\x00\\x1b[2J")
    assert srv.commands["DATA"] == 1  # sent once: no retry of a permanent refusal
