"""The client's answer to a delivery report: whatever it holds, reading it never raises."""

from __future__ import annotations

import pytest

from mail_proxy.reports.client import Answer, parse_answer


def test_a_well_formed_answer_is_read() -> None:
    answer = parse_answer(b'{"queued": 3, "next_sync_after": 60, "error": ["a", 7], '
                          b'"not_found": ["b"]}', "acme")
    assert answer == Answer(queued=3, next_sync_after=60, error={"a", "7"}, not_found={"b"})


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,              # past the parser's recursion
    b'{"error": ["a", "\\ud800"]}',                # an id that is not Unicode text
    b'{"queued": ' + b"9" * 5_000 + b"}",         # more digits than an int converts
    b"<html>502 Bad Gateway</html>", b"\xff\xfe{", b""])
def test_an_answer_that_is_not_usable_json_reads_as_empty(raw: bytes) -> None:
    assert parse_answer(raw, "acme") == Answer()
