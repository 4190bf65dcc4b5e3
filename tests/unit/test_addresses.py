"""Address-list parsing and normal forms (messages.md §2.1)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail_proxy.errors import RejectedMessage
from mail_proxy.manager.addresses import (
    AddressError,
    addr_spec,
    address_field,
    address_list_field,
    parse_address,
    parse_address_list,
    split_addresses,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("ann@example.com", ["ann@example.com"]),
    ("  ann@example.com  ", ["ann@example.com"]),
    ("Billing <billing@acme.test>", ["Billing <billing@acme.test>"]),
    ('"Billing" <billing@acme.test>', ["Billing <billing@acme.test>"]),
    ('"Smith, John" <j@x.test>, bob@y.test', ['"Smith, John" <j@x.test>', "bob@y.test"]),
    ("a@x.test,b@y.test , c@z.test", ["a@x.test", "b@y.test", "c@z.test"]),
    ("a@x.test, , b@y.test,", ["a@x.test", "b@y.test"]),
    ("x@localhost", ["x@localhost"]),
    ('"john doe"@x.test', ['"john doe"@x.test']),
    ("J. Smith <j@x.test>", ['"J. Smith" <j@x.test>']),
    ("John (Sales, EMEA) <j@x.test>", ['"John (Sales, EMEA)" <j@x.test>']),
    ("ann@x.test <ann@x.test>", ['"ann@x.test" <ann@x.test>']),
    ('"a \\"b\\"" <a@b.test>', ['"a \\"b\\"" <a@b.test>']),
    ("<a@x.test>", ["a@x.test"]),
    ('"" <a@x.test>', ["a@x.test"]),
    ("Ann   Lee\t<a@x.test>", ["Ann Lee <a@x.test>"]),
    ('"Ann\tLee" <a@x.test>', ['"Ann\tLee" <a@x.test>']),
    ("Zoë Müller <z@bücher.example>", ["Zoë Müller <z@bücher.example>"]),
    ("o'brien+tag@x-y.test", ["o'brien+tag@x-y.test"]),
    ("a@123.test", ["a@123.test"]),
])
def test_valid_lists_and_normal_form(text: str, expected: list[str]) -> None:
    assert split_addresses(text) == expected


@pytest.mark.parametrize(("text", "detail"), [
    ("bob@@x", None),
    ("bob", None),
    ("@x.test", None),
    ("bob@", None),
    ("a b@x.test", None),
    ("a..b@x.test", None),
    (".a@x.test", None),
    ("é@x.test", None),
    ("a@-x.test", None),
    ("a@x-.test", None),
    ("a@x..test", None),
    ("a@x.test.", None),
    ("a@x_y.test", None),
    ("a@x.test (comment)", None),
    ("Name <a@x.test", None),
    ("Name a@x.test>", None),
    ("<<a@x.test>>", None),
    ("Name <a@x.test> trailing", None),
    ('"unterminated <a@x.test>', "unbalanced quotes or parentheses"),
    ("undisclosed-recipients:;", "groups are not accepted"),
    ("friends: a@x.test, b@y.test;", "groups are not accepted"),
    ("a@[192.0.2.1]", "domain literals are not accepted"),
    ("a@x.test\r\nBcc: evil@z.test", "control characters are not allowed"),
    ("a" * 65 + "@x.test", "the local part is longer than 64 characters"),
    # an envelope of RCPT TO:<"x> NOTIFY=NEVER"@y.test> misleads naive relays
    ('"x> NOTIFY=NEVER"@y.test', "a quoted local part may not contain '<' or '>'"),
    ('Ann <"r<x"@a.test>', "a quoted local part may not contain '<' or '>'"),
])
def test_invalid_addresses(text: str, detail: str | None) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list(text)
    assert caught.value.detail == detail


def test_length_limits() -> None:
    assert split_addresses("a" * 64 + "@x.test")
    assert split_addresses(f"a@{'b' * 63}.test")
    with pytest.raises(AddressError):
        parse_address_list(f"a@{'b' * 64}.test")
    near = ".".join(["c" * 63] * 3) + "." + "d" * 61  # 253 characters
    assert len(near) == 253
    assert split_addresses(f"a@{near}")
    with pytest.raises(AddressError) as caught:
        parse_address_list(f"a@{near}e")
    assert caught.value.detail == "the domain is longer than 253 characters"


def test_idna_domain_for_the_envelope() -> None:
    address = parse_address("Ann <ann@Bücher.example>")
    assert address.normalised == "Ann <ann@Bücher.example>"
    assert address.addr_spec == "ann@xn--bcher-kva.example"
    assert addr_spec("Ann <ann@bücher.example>") == "ann@xn--bcher-kva.example"
    assert addr_spec('"Smith, J" <j@x.test>') == "j@x.test"


def test_parse_address_requires_exactly_one() -> None:
    with pytest.raises(AddressError) as caught:
        parse_address("a@x.test, b@y.test")
    assert caught.value.detail == "exactly one address is required"
    with pytest.raises(AddressError):
        parse_address("   ")


def test_split_addresses_accepts_arrays() -> None:
    assert split_addresses(["a@x.test, B <b@y.test>", "c@z.test"]) == [
        "a@x.test", "B <b@y.test>", "c@z.test"]
    with pytest.raises(AddressError) as caught:
        split_addresses(["a@x.test", "bad@@x"])
    assert caught.value.index == 1


def test_field_helpers_name_the_json_path() -> None:
    with pytest.raises(RejectedMessage) as caught:
        address_list_field({"to": ["ann@x.test", "bob@@x"]}, "to")
    rejection = caught.value.rejection
    assert rejection.code == "invalid_address"
    assert rejection.field == "to[1]"
    assert rejection.reason == "'to[1]': 'bob@@x' is not a valid e-mail address"
    with pytest.raises(RejectedMessage) as caught:
        address_list_field({"cc": 5}, "cc")
    assert caught.value.rejection.reason == (
        "'cc': must be a string or an array of strings, not a number")
    with pytest.raises(RejectedMessage) as caught:
        address_field("a@[1.2.3.4]", "from")
    assert caught.value.rejection.reason == (
        "'from': 'a@[1.2.3.4]' is not a valid e-mail address "
        "(domain literals are not accepted)")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from('ab@.<>",:;()\\ \tx-é[]\r\u2028'), max_size=40))
def test_fuzz_only_address_errors_and_stable_normal_form(text: str) -> None:
    try:
        found = parse_address_list(text)
    except AddressError:
        return
    # A normal form is itself valid and normalises to itself.
    for address in found:
        again = parse_address(address.normalised)
        assert again.normalised == address.normalised
        assert again.addr_spec == address.addr_spec


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text(text: str) -> None:
    try:
        parse_address_list(text)
    except AddressError:
        pass
