"""add-messages entry validation (messages.md §1-2, api.md §4.1)."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mail_proxy.manager.message_ids as message_ids
import mail_proxy.manager.validation as validation
from mail_proxy.errors import RejectedMessage
from mail_proxy.manager.batch_validation import BatchValidator, validate_batch
from mail_proxy.manager.validation import (
    TenantInfo,
    ValidationContext,
    message_id_domain,
    parse_priority,
    validate_message,
)
from mail_proxy.settings import RuntimeSettings

NOW = 1_700_000_000
DOMAIN = "mx.example.test"
ACME = TenantInfo(id="acme", active=True, default_account_id="smtp1",
                  account_ids=frozenset({"smtp1", "smtp2"}),
                  client_base_url="https://app.acme.test")
TENANTS = {
    "acme": ACME,
    "solo": TenantInfo(id="solo", active=True, default_account_id=None,
                       account_ids=frozenset({"only"}), client_base_url=None),
    "many": TenantInfo(id="many", active=True, default_account_id=None,
                       account_ids=frozenset({"a", "b"}), client_base_url=None),
    "none": TenantInfo(id="none", active=True, default_account_id=None,
                       account_ids=frozenset(), client_base_url=None),
    "off": TenantInfo(id="off", active=False, default_account_id="x",
                      account_ids=frozenset({"x"}), client_base_url=None),
    "sup": TenantInfo(id="sup", active=True, default_account_id="x", account_ids=frozenset({"x"}),
                      client_base_url=None,
                      suppressed=frozenset({"gone@example.com", "old@xn--bcher-kva.example"})),
}


def ctx(**kw: Any) -> ValidationContext:
    values: dict[str, Any] = {"tenants": TENANTS, "settings": RuntimeSettings(),
                              "request_tenant_id": "acme", "key_tenant_id": None,
                              "batch_default_priority": None, "now": NOW}
    values.update(kw)
    return ValidationContext(**values)


def msg(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "inv-1", "from": "Billing <billing@acme.test>",
                            "to": "ann@example.com", "subject": "Invoice 1"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def check(entry: object, context: ValidationContext | None = None) -> Any:
    return validate_message(entry, 0, context or ctx(), message_id_domain=DOMAIN)


def rejected(entry: object, context: ValidationContext | None = None) -> tuple[str, str | None]:
    with pytest.raises(RejectedMessage) as caught:
        check(entry, context)
    return caught.value.rejection.code, caught.value.rejection.field


def test_minimal_message_is_normalised() -> None:
    m = check(msg(cc="A <a@x.test>, b@y.test", priority="HIGH", batch_code="b1",
                  headers={"X-Campaign": "q1", "X-N": 7, "X-F": 1.5, "X-Skip": None}))
    assert (m.id, m.tenant_id, m.account_id, m.priority, m.batch_code) == (
        "inv-1", "acme", "smtp1", 1, "b1")
    assert re.fullmatch(r"<[0-9a-f]{32}@mx\.example\.test>", m.smtp_message_id)
    assert m.payload == {
        "from": "Billing <billing@acme.test>", "to": ["ann@example.com"],
        "cc": ["A <a@x.test>", "b@y.test"], "bcc": [], "reply_to": [], "return_path": None,
        "subject": "Invoice 1", "body": "", "html": None, "content_type": "plain",
        "headers": {"X-Campaign": "q1", "X-N": "7", "X-F": "1.5"}, "attachments": []}
    assert m.has_secrets is False and m.deferred_ts is None


@pytest.mark.parametrize(("entry", "code", "field"), [
    ([], "invalid_message", None),
    ("x", "invalid_message", None),
    (msg(colour="red"), "unknown_field", "colour"),
    (msg(id=...), "missing_field", "id"),
    (msg(id=None), "missing_field", "id"),
    (msg(id=5), "invalid_field", "id"),
    (msg(id=""), "invalid_field", "id"),
    (msg(id="a" * 256), "invalid_field", "id"),
    (msg(id="a\nb"), "invalid_field", "id"),
    (msg(tenant_id=3), "invalid_field", "tenant_id"),
    (msg(tenant_id="nope"), "tenant_not_found", "tenant_id"),
    (msg(tenant_id="off"), "tenant_inactive", "tenant_id"),
    (msg(account_id="smtp9"), "account_not_found", "account_id"),
    (msg(tenant_id="many"), "account_required", "account_id"),
    (msg(tenant_id="none"), "account_required", "account_id"),
    (msg(**{"from": ...}), "missing_field", "from"),
    (msg(from_addr="other@acme.test"), "conflicting_fields", "from_addr"),
    (msg(**{"from": "a@x.test, b@x.test"}), "invalid_address", "from"),
    (msg(**{"from": ["a@x.test"]}), "invalid_address", "from"),
    (msg(to=...), "missing_field", "to"),
    (msg(to=[]), "missing_field", "to"),
    (msg(to=" , "), "missing_field", "to"),
    (msg(to=["ann@example.com", "bob@@x"]), "invalid_address", "to[1]"),
    (msg(to=[5]), "invalid_address", "to[0]"),
    (msg(to={"a": 1}), "invalid_address", "to"),
    (msg(bcc="undisclosed-recipients:;"), "invalid_address", "bcc"),
    (msg(reply_to="x@[10.0.0.1]"), "invalid_address", "reply_to"),
    (msg(subject=...), "missing_field", "subject"),
    (msg(subject=""), "invalid_field", "subject"),
    (msg(subject="a\r\nBcc: x@y"), "invalid_field", "subject"),
    (msg(subject="s" * 999), "invalid_field", "subject"),
    (msg(subject=1), "invalid_field", "subject"),
    (msg(body=1), "invalid_field", "body"),
    (msg(html=[]), "invalid_field", "html"),
    (msg(content_type="markdown"), "invalid_field", "content_type"),
    (msg(content_type="html", html="<p>x</p>"), "conflicting_fields", "html"),
    (msg(return_path="Bounce <b@acme.test>"), "invalid_address", "return_path"),
    (msg(return_path="b@@acme.test"), "invalid_address", "return_path"),
    (msg(message_id="no-at-sign"), "invalid_field", "message_id"),
    (msg(message_id="<a b@c>"), "invalid_field", "message_id"),
    (msg(message_id="<a@b@c>"), "invalid_field", "message_id"),
    (msg(message_id="<a@b"), "invalid_field", "message_id"),
    (msg(message_id="x" * 250 + "@y"), "invalid_field", "message_id"),
    (msg(headers=[]), "invalid_header", "headers"),
    (msg(headers={"Bad Name": "x"}), "invalid_header", "headers.Bad Name"),
    (msg(headers={"X:Y": "x"}), "invalid_header", "headers.X:Y"),
    (msg(headers={"X" * 77: "x"}), "invalid_header", "headers." + "X" * 77),
    (msg(headers={"X-A": True}), "invalid_header", "headers.X-A"),
    (msg(headers={"X-A": {"b": 1}}), "invalid_header", "headers.X-A"),
    (msg(headers={"X-A": "a\r\nBcc: x@y"}), "invalid_header", "headers.X-A"),
    (msg(headers={"X-A": "v" * 999}), "invalid_header", "headers.X-A"),
    (msg(headers={f"X-{i}": "v" for i in range(101)}), "invalid_header", "headers"),
    (msg(headers={"message-id": "<a@b>"}), "reserved_header", "headers.message-id"),
    (msg(headers={"X-Mail-Proxy-ID": "x"}), "reserved_header", "headers.X-Mail-Proxy-ID"),
    (msg(priority="urgent"), "invalid_priority", "priority"),
    (msg(priority=1.5), "invalid_priority", "priority"),
    (msg(priority=True), "invalid_priority", "priority"),
    (msg(priority=[]), "invalid_priority", "priority"),
    (msg(deferred_ts="1700000000"), "invalid_field", "deferred_ts"),
    (msg(deferred_ts=-1), "invalid_field", "deferred_ts"),
    (msg(deferred_ts=NOW + 367 * 86400), "invalid_field", "deferred_ts"),
    (msg(deferred_ts=float("nan")), "invalid_field", "deferred_ts"),
    (msg(deferred_ts=True), "invalid_field", "deferred_ts"),
    (msg(batch_code="*"), "invalid_field", "batch_code"),
    (msg(batch_code="b" * 65), "invalid_field", "batch_code"),
    (msg(batch_code="a\x00"), "invalid_field", "batch_code"),
    (msg(batch_code="a\u2029b"), "invalid_field", "batch_code"),  # a paragraph separator
    (msg(id="id-\u2028x"), "invalid_field", "id"),  # a line separator, raw in log lines
    (msg(attachments={}), "invalid_attachment", "attachments"),
    (msg(attachments=[{"filename": "a.txt"}]), "invalid_attachment",
     "attachments[0].storage_path"),
])
def test_rejections(entry: object, code: str, field: str | None) -> None:
    assert rejected(entry) == (code, field)


def test_tenant_resolution_order() -> None:
    assert check(msg(tenant_id="solo")).account_id == "only"
    assert check(msg(), ctx(request_tenant_id=None, key_tenant_id="solo")).tenant_id == "solo"
    assert rejected(msg(), ctx(request_tenant_id=None)) == ("missing_field", "tenant_id")
    assert rejected(msg(tenant_id="acme"), ctx(key_tenant_id="solo"))[0] == "tenant_mismatch"
    assert check(msg(account_id="smtp2")).account_id == "smtp2"


def test_checks_run_in_spec_order() -> None:
    # Everything is wrong: the lowest-numbered check wins each time.
    entry = msg(colour=1, id=None, to="bad@@x", subject="")
    assert rejected(entry)[0] == "unknown_field"
    del entry["colour"]
    assert rejected(entry)[0] == "missing_field"
    entry["id"] = "x"
    assert rejected(entry) == ("invalid_address", "to")
    entry["to"] = "a@b.test"
    assert rejected(entry) == ("invalid_field", "subject")


def test_reason_names_field_and_value() -> None:
    with pytest.raises(RejectedMessage) as caught:
        check(msg(to=["a@x.test", "bob@@x"]))
    assert caught.value.rejection.reason == "'to[1]': 'bob@@x' is not a valid e-mail address"


def test_from_alias_and_fields() -> None:
    m = check(msg(**{"from": ...}, from_addr=" Billing <billing@acme.test> "))
    assert m.payload["from"] == "Billing <billing@acme.test>"
    same = check(msg(from_addr='"Billing" <billing@acme.test>'))
    assert same.payload["from"] == "Billing <billing@acme.test>"
    m = check(msg(content_type="text/HTML", body="<p>x</p>", html="",
                  return_path="<bounce@bücher.example>", message_id=" abc@def "))
    assert (m.payload["content_type"], m.payload["html"]) == ("html", None)
    assert m.payload["return_path"] == "bounce@xn--bcher-kva.example"
    assert m.smtp_message_id == "<abc@def>"


def test_recipient_limit_counts_distinct_addresses() -> None:
    context = ctx(settings=RuntimeSettings(max_recipients=3))
    ok = msg(to="a@x.test, A@X.TEST", cc=["b@x.test"], bcc="c@x.test", reply_to="d@x.test")
    assert check(ok, context).payload["to"] == ["a@x.test", "A@X.TEST"]
    assert rejected(msg(to="a@x.test", cc="b@x.test", bcc="c@x.test, e@x.test"),
                    context) == ("too_many_recipients", None)


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (3, 3), (-5, 0), (9, 3), ("1", 1), (" 7 ", 3), ("-2", 0), (2.0, 2),
    ("immediate", 0), ("High", 1), ("MEDIUM", 2), ("low", 3), (None, None),
])
def test_parse_priority(value: object, expected: int | None) -> None:
    assert parse_priority(value) == expected


@pytest.mark.parametrize("value", ["urgent", 1.5, True, [], {}, "1.0", "1_0", "", "١"])
def test_parse_priority_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_priority(value)


def test_priority_defaults() -> None:
    assert check(msg()).priority == 2
    assert check(msg(), ctx(batch_default_priority=0)).priority == 0
    assert check(msg(priority=3), ctx(batch_default_priority=0)).priority == 3
    assert check(msg(), ctx(settings=RuntimeSettings(default_priority=1))).priority == 1


def test_deferred_ts_is_floored_and_bounded() -> None:
    assert check(msg(deferred_ts=NOW + 10.9)).deferred_ts == NOW + 10
    assert check(msg(deferred_ts=5)).deferred_ts == 5  # past: due now
    assert check(msg(deferred_ts=NOW + 366 * 86400)).deferred_ts == NOW + 366 * 86400


def test_header_number_formats() -> None:
    m = check(msg(headers={"X-Big": 1e20, "X-Small": 1e-7, "X-Neg": -3}))
    assert m.payload["headers"] == {"X-Big": "100000000000000000000", "X-Small": "0.0000001",
                                    "X-Neg": "-3"}


def test_suppression() -> None:
    sup = ctx(request_tenant_id="sup")
    assert rejected(msg(to="Gone <GONE@example.com>", cc="old@bücher.example"), sup) == (
        "suppressed", None)
    assert check(msg(to="gone@example.com, ok@example.com"), sup).payload["to"] == [
        "gone@example.com", "ok@example.com"]
    off = ctx(request_tenant_id="sup", settings=RuntimeSettings(suppression_enabled=False))
    assert check(msg(to="gone@example.com"), off).tenant_id == "sup"


def test_attachments_and_secrets() -> None:
    m = check(msg(attachments=[
        {"filename": "inv.pdf", "storage_path": "https://files.acme.test/1.pdf",
         "auth": {"method": "bearer", "token": "s3cret"}},
        {"filename": "a.txt", "storage_path": "base64:aGVsbG8="}]))
    assert [a["fetch_mode"] for a in m.payload["attachments"]] == ["http_url", "base64"]
    assert m.has_secrets is True
    plain = check(msg(attachments=[{"filename": "x.pdf", "storage_path": "doc/1"}]))
    assert plain.payload["attachments"][0]["fetch_mode"] == "endpoint"
    assert plain.has_secrets is False


def test_attachment_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "normalise_attachments", None)
    m = check(msg(attachments=[{"filename": "r.pdf", "storage_path": "/srv/r.pdf"}]))
    assert m.payload["attachments"][0]["fetch_mode"] == "filesystem"
    assert rejected(msg(attachments=[{"filename": 1, "storage_path": "x"}]))[0] == (
        "invalid_attachment")


def test_batch_duplicates_first_entry_wins() -> None:
    entries: list[object] = [
        msg(id="a"), msg(id="b", to="bad@@x"), msg(id="a", subject="again"), msg(id="b"),
        msg(id="a", tenant_id="solo"), 42, msg(id="c")]
    accepted, rejected_ = validate_batch(entries, ctx(), message_id_domain=DOMAIN)
    assert [(i, m.tenant_id, m.id) for i, m in accepted] == [
        (0, "acme", "a"), (4, "solo", "a"), (6, "acme", "c")]
    assert [(r["index"], r["id"], r["code"]) for r in rejected_] == [
        (1, "b", "invalid_address"), (2, "a", "duplicate_id"), (3, "b", "duplicate_id"),
        (5, None, "invalid_message")]
    assert rejected_[1]["field"] == "id"
    assert "field" not in rejected_[3]
    assert len({m.smtp_message_id for _, m in accepted}) == 3


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_a_batch_validated_in_slices_gives_the_same_answer(size: int) -> None:
    """Enqueue validates a big batch a slice at a time, yielding in between: duplicate ids
    across slices and the indexes of rejections must come out as in one pass."""
    entries: list[object] = [
        msg(id="a"), msg(id="b", to="bad@@x"), msg(id="a", subject="again"), msg(id="b"),
        msg(id="a", tenant_id="solo"), 42, msg(id="c"), msg(id="c")]
    whole = validate_batch(entries, ctx(), message_id_domain=DOMAIN)
    validator = BatchValidator(ctx(), message_id_domain=DOMAIN)
    for start in range(0, len(entries), size):
        validator.add(entries[start:start + size], start)

    def shape(accepted: list, rejected: list) -> tuple[list, list]:
        return ([(i, m.tenant_id, m.id) for i, m in accepted],
                [(r["index"], r["id"], r["code"]) for r in rejected])

    assert shape(validator.accepted, validator.rejected) == shape(*whole)


@pytest.mark.parametrize(("host", "expected"), [
    ("box.acme.test", "box.acme.test"), ("box.acme.test.", "box.acme.test"),
    ("box", "box"), ("", "mail-proxy.localdomain"), ("localhost", "mail-proxy.localdomain"),
    ("localhost.localdomain", "mail-proxy.localdomain"), ("bad_name", "mail-proxy.localdomain"),
])
def test_message_id_domain(monkeypatch: pytest.MonkeyPatch, host: str, expected: str) -> None:
    # The host lookup is replaced so that the test never asks a DNS server anything.
    monkeypatch.setattr(message_ids.socket, "getfqdn", lambda: host)
    message_ids._host_domain.cache_clear()
    try:
        assert message_id_domain(RuntimeSettings()) == expected
        assert message_id_domain(RuntimeSettings(message_id_domain="mail.acme.test")) == (
            "mail.acme.test")
    finally:
        message_ids._host_domain.cache_clear()


def test_huge_integers_are_rejected_not_crashing() -> None:
    huge = 10 ** 5000
    assert rejected(msg(headers={"X-A": huge}))[0] == "invalid_header"
    assert rejected(msg(priority=[huge]))[0] == "invalid_priority"
    assert rejected(msg(deferred_ts=huge))[0] == "invalid_field"
    assert rejected(msg(to=[huge]))[0] == "invalid_address"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_FIELD_NAMES = sorted(validation._FIELDS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_fuzz_random_json_entry(entry: object) -> None:
    accepted, rejected_ = validate_batch([entry], ctx(), message_id_domain=DOMAIN)
    assert len(accepted) + len(rejected_) == 1


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_FIELD_NAMES), _JSON, max_size=6))
def test_fuzz_known_fields_with_random_values(changes: dict[str, Any]) -> None:
    # Start from a valid message so that the fuzzed value reaches its own check.
    entry = msg()
    entry.update(changes)
    accepted, rejected_ = validate_batch([entry], ctx(), message_id_domain=DOMAIN)
    assert len(accepted) + len(rejected_) == 1
    for r in rejected_:
        assert isinstance(r["reason"], str) and r["reason"]


def test_thousand_messages_speed() -> None:
    entries: list[object] = [
        msg(id=f"m{i}", to=f"user{i}@example.com", cc="Copy <copy@example.com>",
            body="hello", headers={"X-Campaign": "q1"}) for i in range(1000)]
    validate_batch(entries[:10], ctx(), message_id_domain=DOMAIN)  # import-time costs
    best = float("inf")
    for run in range(3):
        # Fresh recipients each run, so the address cache only helps with repeated senders.
        for i, entry in enumerate(entries):
            assert isinstance(entry, dict)
            entry["to"] = f"user{i}-{run}@example.com"
        start = time.perf_counter()
        accepted, rejected_ = validate_batch(entries, ctx(), message_id_domain=DOMAIN)
        best = min(best, time.perf_counter() - start)
    assert len(accepted) == 1000 and not rejected_
    print(f"\nvalidate_batch: 1000 messages in {best * 1000:.1f} ms")


def test_generated_message_ids_start_with_the_time_and_end_random() -> None:
    """Time first keeps the Message-ID index appending at its end; 80 random bits keep ids
    unguessable."""
    before = time.time_ns() // 1_000_000
    ids = [check(msg(id=f"t{i}")).smtp_message_id for i in range(50)]
    after = time.time_ns() // 1_000_000
    stamps = [int(i[1:13], 16) for i in ids]
    assert all(before <= s <= after for s in stamps) and stamps == sorted(stamps)
    assert len({i[13:33] for i in ids}) == 50
    assert all(re.fullmatch(r"<[0-9a-f]{32}@mx\.example\.test>", i) for i in ids)


def _word(text: bytes, kind: str = "b") -> str:
    if kind == "b":
        return "=?utf-8?b?" + base64.b64encode(text).decode() + "?="
    return "=?utf-8?q?" + "".join(f"={b:02X}" for b in text) + "?="


HIDDEN = b"Invoice\r\nBcc: evil@example.com"


@pytest.mark.parametrize("entry, code, field", [
    (msg(subject=_word(HIDDEN)), "invalid_field", "subject"),
    (msg(subject="Re: " + _word(HIDDEN, "q") + " ok"), "invalid_field", "subject"),
    # a word whose decoded text is itself a word hiding the break
    (msg(subject=_word(_word(HIDDEN).encode())), "invalid_field", "subject"),
    (msg(subject=_word(b"a\x00b")), "invalid_field", "subject"),
    # white space inside the encoded text: the email package still decodes the word
    (msg(subject="=?utf-8?q?a=0D=0AX-Evil: 1?="), "invalid_field", "subject"),
    (msg(subject="=?utf-16?b?" + base64.b64encode("a\r\nX: 1".encode("utf-16")).decode()
         + "?="), "invalid_field", "subject"),
    (msg(headers={"X-Tag": _word(HIDDEN)}), "invalid_header", "headers.X-Tag"),
    (msg(**{"from": _word(HIDDEN) + " <billing@acme.test>"}), "invalid_address", "from"),
    (msg(to=["ann@example.com", '"' + _word(HIDDEN) + '" <bob@example.com>']),
     "invalid_address", "to[1]"),
    (msg(reply_to=_word(HIDDEN, "q") + " <r@acme.test>"), "invalid_address", "reply_to"),
    (msg(attachments=[{"filename": _word(b"a\r\nX-Evil: 1") + ".txt",
                       "storage_path": "base64:aGVsbG8="}]),
     "invalid_attachment", "attachments[0].filename"),
])
def test_encoded_words_hiding_line_breaks_are_refused(entry: object, code: str,
                                                      field: str) -> None:
    """CR/LF written as an RFC 2047 encoded word: the email package decodes the word and
    (before Python 3.11.10) wrote the break raw, so the rest became headers or the body."""
    assert rejected(entry) == (code, field)


def test_harmless_encoded_words_are_kept() -> None:
    m = check(msg(subject="=?utf-8?q?caf=C3=A9?= " + _word("ß".encode()),
                  headers={"X-Tag": _word(b"plain")},
                  **{"from": _word("Jörg".encode()) + " <billing@acme.test>"}))
    assert m.payload["subject"].startswith("=?utf-8?q?caf=C3=A9?=")


def test_odd_charsets_never_break_validation() -> None:
    """A codec without the "replace" handler (idna) made the check itself raise: a 500 for
    the whole batch (verification hunt)."""
    m = check(msg(subject="=?idna?q?abc?=", headers={"X-A": "=?idna?b?YWJj?="}))
    assert m.payload["subject"] == "=?idna?q?abc?="


def test_a_word_only_the_packages_fallbacks_decode_is_refused() -> None:
    hidden = "\r\nBcc: e7@evil.test"
    text = "+" + base64.b64encode(hidden.encode("utf-16-be")).decode().rstrip("=") + "-"
    while sum(c.isalnum() or c in "+/" for c in text) % 4 != 1:
        text += "x"
    word = "=?a?b?c?d?=.=?utf-7?b?" + text + "?="
    assert rejected(msg(headers={"Content-Disposition": word})) == \
        ("invalid_header", "headers.Content-Disposition")


@pytest.mark.parametrize("entry, code, field", [
    (msg(attachments=[{"filename": "r.pdf", "storage_path": "base64:aGVsbG8=",
                       "mime_type": "text/html\n"}]), "invalid_attachment",
     "attachments[0].mime_type"),  # "$" matched before the final newline
    (msg(html="<img src=cid:a>", attachments=[{"filename": "a.png", "content_id": "a\n",
                                               "storage_path": "base64:aGVsbG8="}]),
     "invalid_attachment", "attachments[0].content_id"),
    (msg(attachments=[{"filename": "a.png", "content_id": "a\x00b",
                       "storage_path": "base64:aGVsbG8="}]),
     "invalid_attachment", "attachments[0].content_id"),
    (msg(**{"from": "=?utf-8?q?x?=@acme.test"}), "invalid_address", "from"),
    (msg(to=["A" * 257 + " <ann@example.com>"]), "invalid_address", "to[0]"),
    (msg(headers={"Sender": "a@acme.test", "sender": "b@acme.test"}), "invalid_header",
     "headers.sender"),
    (msg(subject="a\x00b"), "invalid_field", "subject"),
    (msg(subject="a\x1b[31m"), "invalid_field", "subject"),
])
def test_what_the_composer_could_not_write_is_refused(entry: object, code: str,
                                                      field: str) -> None:
    """Fuzz hunt: accepted, then every attempt failed or the message came out damaged."""
    assert rejected(entry) == (code, field)


def test_long_but_sane_display_names_and_tabs_still_pass() -> None:
    check(msg(to=["A" * 256 + " <ann@example.com>"], subject="a\tb"))
