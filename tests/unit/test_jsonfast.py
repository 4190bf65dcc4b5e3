"""jsonfast: payloads written by orjson read back as the standard library wrote them, and
request bodies refuse the non-JSON constants that orjson could not write faithfully."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_loads_strict_refuses_non_json_constants(constant: str) -> None:
    with pytest.raises(jsonfast.NotJsonConstant, match=constant):
        jsonfast.loads_strict(f'{{"priority": {constant}}}'.encode())


def test_loads_strict_is_json_loads_otherwise() -> None:
    text = b'{"a": [1, 2.5, -3e10, true, null, "\\u00e8"], "big": 123456789012345678901}'
    assert jsonfast.loads_strict(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        jsonfast.loads_strict(b'{"a": ')
