"""jsonfast: payloads written by orjson read back as the standard library wrote them, and
request bodies refuse the non-JSON constants that orjson could not write faithfully."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest

from mail_proxy import jsonfast


def test_dumps_compact_round_trips_and_keeps_non_ascii() -> None:
    payload = {"from": "Zoë <zoe@example.com>", "to": ["a@example.com"], "cc": [],
               "subject": "Préventivo € 10 \U0001F600", "body": "line\nnext\t\"quoted\"\\\x01",
               "html": None, "headers": {"X-N": "1"}, "attachments": [{"size": 10.5}]}
    text = jsonfast.dumps_compact(payload)
    assert json.loads(text) == payload
    assert "Zoë" in text and "€" in text and ": " not in text and ", " not in text


@pytest.mark.parametrize("value", [{"n": 2**70}, {"s": "\ud800"}])
def test_dumps_compact_falls_back_where_orjson_refuses(value: dict[str, object]) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert jsonfast.dumps_compact(value) == expected


@pytest.mark.parametrize("value", [
    {"n": 2**70}, {"s": "\ud800 and Zoë"}, {1: "int key"},
    {"path": pathlib.PurePosixPath("/x"), "set": frozenset()},
    {"plain": "Zoë €", "list": [1, 2.5, None, True]}])
def test_dumps_lenient_always_writes_utf8_json(value: dict[object, object]) -> None:
    raw = jsonfast.dumps_lenient(value)
    read = json.loads(raw.decode("utf-8"))
    expected = json.loads(json.dumps(value, default=str))
    assert read == expected


def test_dumps_lenient_writes_times_in_iso_form() -> None:
    when = datetime.datetime(2026, 11, 24, 17, 0, tzinfo=datetime.UTC)
    assert json.loads(jsonfast.dumps_lenient({"when": when})) == {
        "when": "2026-11-24T17:00:00+00:00"}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_loads_strict_refuses_non_json_constants(constant: str) -> None:
    with pytest.raises(jsonfast.NotJsonConstant, match=constant):
        jsonfast.loads_strict(f'{{"priority": {constant}}}'.encode())


def test_loads_strict_is_json_loads_otherwise() -> None:
    text = b'{"a": [1, 2.5, -3e10, true, null, "\\u00e8"], "big": 123456789012345678901}'
    assert jsonfast.loads_strict(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        jsonfast.loads_strict(b'{"a": ')


@pytest.mark.parametrize("raw", [b'{"s": "\\ud800"}', b'["ok", {"k": ["\\uDFFF x"]}]',
                                 b'{"\\udbff": 1}', b'"\\ud83d alone"'])
def test_loads_strict_refuses_lone_surrogates(raw: bytes) -> None:
    with pytest.raises(jsonfast.NotUnicodeText):
        jsonfast.loads_strict(raw)


@pytest.mark.parametrize("raw", [b'{"s": "\\ud83d\\ude00"}', b'{"s": "\\\\ud800"}',
                                 b'\xef\xbb\xbf{"bom": true}', '{"s": "Zo\u00eb"}'.encode()])
def test_loads_strict_accepts_pairs_escaped_backslashes_and_a_bom(raw: bytes) -> None:
    assert jsonfast.loads_strict(raw) == json.loads(raw.decode("utf-8-sig"))


def test_loads_strict_reads_utf8_only() -> None:
    with pytest.raises(UnicodeDecodeError):
        jsonfast.loads_strict(b'{"s": "\xed\xa0\x80"}')  # an encoded surrogate
    with pytest.raises(UnicodeDecodeError):
        jsonfast.loads_strict('{"s": "x"}'.encode("utf-16"))


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"n": ' + b"9" * 5_000 + b"}", "more than 4,300 digits"),
    (b'{"n": -' + b"9" * 5_000 + b"}", "more than 4,300 digits"),
    (b'{"n": 1e400}', "1e400 is too large"),
    (b'{"n": -2.5E+999}', "too large")])
def test_loads_strict_names_what_python_cannot_hold(raw: bytes, reason: str) -> None:
    with pytest.raises(jsonfast.NotUsableJson, match=reason):
        jsonfast.loads_strict(raw)


def test_loads_strict_keeps_numbers_python_can_hold() -> None:
    raw = b'[' + b"9" * 4_300 + b', -1.5e300, 0.1, -0, 12]'
    assert jsonfast.loads_strict(raw) == json.loads(raw)
