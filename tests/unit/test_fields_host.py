"""The SMTP host of an account: names and addresses, stored in the form a socket connects to."""

from __future__ import annotations

import pytest

from mail_proxy.manager.fields import Bad, host


@pytest.mark.parametrize(("given", "stored"), [
    ("mail.example.com", "mail.example.com"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
    ("[::1]", "::1"), ("[127.0.0.1]", "127.0.0.1"), ("[2001:db8::25]", "2001:db8::25")])
def test_addresses_are_stored_without_brackets(given: str, stored: str) -> None:
    assert host(given) == stored


@pytest.mark.parametrize("given", ["[mail.example.com]", "exa mple.com", "127.0.0.1\x00x",
                                   "[::1", "a" * 254])
def test_what_no_socket_can_reach_is_refused(given: str) -> None:
    with pytest.raises(Bad):
        host(given)
