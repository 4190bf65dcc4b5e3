"""The report signature (reports.md §3) against an independent reading of the spec."""

from __future__ import annotations

import hashlib
import hmac
import time

from mail_proxy.reports.signing import HEADER, mac, sign, verify

SECRET = "s3cret-" * 6
BODY = b'{"delivery_report":[{"id":"inv-1","sent_ts":1767225661}]}'


def spec_verify(secret: str, header: str, raw_body: bytes, tolerance: int = 300) -> bool:
    # The client of reports.md §3, written out again here.
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    t = next((v for k, v in parts if k.strip() == "t"), None)
    sigs = [v for k, v in parts if k.strip() == "v1"]
    if t is None or not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    want = hmac.new(secret.encode(), t.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, s.strip()) for s in sigs)


def test_header_name_and_format() -> None:
    assert HEADER == "X-Mail-Proxy-Signature"
    value = sign(SECRET, BODY, timestamp=1767225700)
    t, v1 = value.split(",")
    assert t == "t=1767225700"
    assert v1.startswith("v1=") and len(v1) == 3 + 64 and v1[3:] == v1[3:].lower()


def test_mac_is_hmac_sha256_over_t_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1767225700." + BODY, hashlib.sha256).hexdigest()
    assert mac(SECRET, 1767225700, BODY) == expected


def test_fresh_signature_passes_the_spec_client_and_ours() -> None:
    header = sign(SECRET, BODY)
    assert spec_verify(SECRET, header, BODY)
    assert verify(SECRET, header, BODY)


def test_tampered_body_wrong_secret_and_missing_header_fail() -> None:
    header = sign(SECRET, BODY)
    assert not verify(SECRET, header, BODY + b" ")
    assert not verify("another-secret-" * 3, header, BODY)
    assert not verify(SECRET, None, BODY)
    assert not verify(SECRET, "garbage", BODY)


def test_old_or_future_timestamp_is_refused() -> None:
    now = time.time()
    old = sign(SECRET, BODY, timestamp=int(now) - 301)
    future = sign(SECRET, BODY, timestamp=int(now) + 301)
    assert not verify(SECRET, old, BODY, now=now)
    assert not verify(SECRET, future, BODY, now=now)
    assert verify(SECRET, sign(SECRET, BODY, timestamp=int(now) - 299), BODY, now=now)


def test_any_v1_may_match_and_unknown_labels_are_ignored() -> None:
    t = int(time.time())
    good = mac(SECRET, t, BODY)
    header = f"t={t}, v0=abc, v1={'0' * 64}, v1={good}, v9=zzz"
    assert verify(SECRET, header, BODY)
    assert spec_verify(SECRET, header, BODY)
