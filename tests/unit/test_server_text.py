"""classify.server_text: what an SMTP server says becomes one line of printable text that
every database can store and every terminal can show (QA hunt, delivery findings 2 and 8)."""

from __future__ import annotations

import aiosmtplib
import pytest

from mail_proxy.delivery import classify as c


@pytest.mark.parametrize(("raw", "shown"), [
    ("550 5.1.1 bad\x00nul", "550 5.1.1 bad\\x00nul"),
    ("bad\x1b[31mRED\x1b[0m", "bad\\x1b[31mRED\\x1b[0m"),
    ("del\x7f bell\x07 backspace\x08", "del\\x7f bell\\x07 backspace\\x08"),
    ("csi \u009b2J", "csi \\x9b2J"),  # C1 controls are terminal escapes too
    ("rtl \u202eevil", "rtl \\u202eevil"),  # bidi overrides reorder what the operator sees
    ("tab\tkept", "tab\tkept"),
])
def test_control_characters_are_shown_escaped(raw: str, shown: str) -> None:
    assert c.server_text(raw) == shown


def test_multi_line_replies_are_joined_with_spaces() -> None:
    assert c.server_text("5.7.1 first\n5.7.1 second\r\n  third\x0bfourth") == \
        "5.7.1 first 5.7.1 second third fourth"


def test_latin1_fallback_keeps_accents_and_escapes_c1_controls() -> None:
    raw = "Empf\xe4nger \x85 \x9b unbekannt".encode("latin-1").decode("utf-8", "surrogateescape")
    # \x85 (NEL) is a line break for str.splitlines, \x9b a control
    assert c.server_text(raw) == "Empfänger \\x9b unbekannt"


def test_printable_unicode_is_kept() -> None:
    assert c.server_text("boîte pleine — 受信者") == "boîte pleine — 受信者"


def test_reply_failure_and_refused_entries_use_the_safe_text() -> None:
    failure = c.reply_failure(c.DATA, 554, "5.7.1 spam\x00\x1b[2J")
    assert failure.code == "smtp_permanent"
    assert failure.message == "554 5.7.1 spam\\x00\\x1b[2J"
    entry = c.refused_entry("a@x.test", 550, "5.1.1 bad\x00")
    assert entry["message"] == "5.1.1 bad\\x00"


@pytest.mark.parametrize("code", [250, 251, 354, 220, 199, 600])
def test_a_reply_that_is_not_a_refusal_is_never_permanent(code: int) -> None:
    for stage in (c.MAIL, c.RCPT, c.DATA):
        failure = c.reply_failure(stage, code, "2.1.5 ok")
        assert not failure.permanent
        assert failure.code == "connection_failed"
    refused = [c.refused_entry("a@x.test", code, "2.1.5 ok")]
    assert not c.all_refused_failure(refused).permanent


def test_connection_failure_keeps_the_reason_of_a_bad_reply() -> None:
    exc = aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response line: \x1b[2Jx")
    failure = c.connection_failure(exc, "mx.test", 25, c.EHLO)
    assert failure.code == "connection_failed" and not failure.permanent
    assert failure.message == \
        "bad reply from mx.test:25 during ehlo: Malformed SMTP response line: \\x1b[2Jx"
