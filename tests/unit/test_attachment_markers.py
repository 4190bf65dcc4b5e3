"""MD5 marker removal and the expected MD5 (delivery.md §9.6)."""

from __future__ import annotations

import pytest

from mail_proxy.delivery.attachments.markers import clean_filename, expected_md5
from mail_proxy.delivery.attachments.modes import infer_mode, split_explicit

HEX = "9e107d9d372bb6826bd81d3542a419d6"


@pytest.mark.parametrize(("raw", "clean"), [
    (f"report_{{MD5:{HEX}}}.pdf", "report.pdf"),
    (f"{{MD5:{HEX}}}_report.pdf", "report.pdf"),
    (f"a__{{MD5:{HEX}}}__b.txt", "a_b.txt"),
    (" plain name.txt ", "plain name.txt"),
    ("short_{MD5:abc}.pdf", "short.pdf"),
])
def test_clean_filename(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean


def test_expected_md5_prefers_content_md5_then_a_32_digit_marker() -> None:
    assert expected_md5(f"r_{{MD5:{HEX.upper()}}}.pdf", None) == HEX
    assert expected_md5(f"r_{{MD5:{HEX}}}.pdf", "A" * 32) == "a" * 32
    assert expected_md5("r_{MD5:abc}.pdf", None) is None
    assert expected_md5("r.pdf", None) is None


@pytest.mark.parametrize(("path", "mode"), [
    ("base64:QQ==", "base64"), ("http://h/x", "http_url"), ("https://h/x", "http_url"),
    ("HTTP://h/x", "http_url"), ("Https://h/x", "http_url"),  # schemes ignore case
    ("/abs", "filesystem"), ("[https://h/x]p", "endpoint"), ("m:rel/x", "mount"),
    ("doc-1", "endpoint"),
])
def test_infer_mode(path: str, mode: str) -> None:
    assert infer_mode(path) == mode


def test_split_explicit() -> None:
    assert split_explicit("[https://h.test/get]id=1&x=[2]") == ("https://h.test/get", "id=1&x=[2]")
    assert split_explicit("doc-1") is None
