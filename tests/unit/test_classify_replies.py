"""Reply classification details found against a real Postfix (interop hunt, 2026-11-25)."""

from __future__ import annotations

import pytest

from mail_proxy.delivery import classify as c
from mail_proxy.errors import ThrottleFailure, TransientFailure


@pytest.mark.parametrize("text", ["4.7.1 Error: too much mail from 127.0.0.1",
                                  "4.7.1 Error: too many recipients from 10.1.2.3",
                                  "4.7.0 Rate limit exceeded, slow down"])
def test_postfix_rate_limit_replies_throttle_instead_of_spending_attempts(text: str) -> None:
    assert isinstance(c.reply_failure(c.MAIL, 450, text), ThrottleFailure)


def test_a_per_message_recipient_limit_is_not_a_rate() -> None:
    failure = c.reply_failure(c.RCPT, 452, "4.5.3 Error: too many recipients")
    assert type(failure) is TransientFailure and failure.code == "smtp_transient"


def test_auth_offered_only_after_starttls_is_named() -> None:
    failure = c.auth_unsupported("mx.example", 25, tls_mode="none", offers_auth=False,
                                 offers_starttls=True)
    assert failure.code == "auth_unsupported"
    assert str(failure) == ("mx.example:25 offers AUTH only after STARTTLS (it announces "
                            "STARTTLS and no AUTH): set tls_mode starttls")
    plain = c.auth_unsupported("mx.example", 25, tls_mode="starttls", offers_auth=False,
                               offers_starttls=True)
    assert "offers no usable AUTH mechanism" in str(plain)
