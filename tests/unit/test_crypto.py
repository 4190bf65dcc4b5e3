"""Key ring: sources, value formats, rotation helpers, key file writing."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mail_proxy.errors import KeyRingError
from mail_proxy.security.crypto import (
    DecryptError,
    KeyRing,
    SecretUnavailable,
    generate_key,
    is_encrypted,
    kid,
    write_key_file,
)

NO_SECRETS = Path("/nonexistent/mail-proxy-test/encryption_key")


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def load(folder: Path | None, env: dict[str, str] | None = None,
         secrets_path: Path = NO_SECRETS) -> KeyRing:
    return KeyRing.load(folder, env=env or {}, secrets_path=secrets_path)


@pytest.fixture
def k1() -> bytes:
    return generate_key()


@pytest.fixture
def k2() -> bytes:
    return generate_key()


def test_kid_is_sha256_prefix() -> None:
    key = bytes(range(32))
    assert kid(key) == "630dcd29"  # sha256(bytes 0..31) starts 630dcd2966c4336691125448bbb25b4f


def test_round_trip_and_format(k1: bytes) -> None:
    ring = KeyRing([k1])
    value = ring.encrypt("pässword")
    prefix, version, key_id, body = value.split(":")
    assert (prefix, version, key_id) == ("ENC", "v1", kid(k1))
    blob = base64.b64decode(body, validate=True)
    assert len(blob) == 12 + len("pässword".encode()) + 16
    assert ring.decrypt(value) == "pässword"
    assert ring.encrypt("x") != ring.encrypt("x")  # random nonce
    assert is_encrypted(value) and not is_encrypted("plain") and not is_encrypted(None)
    assert KeyRing.kid_of(value) == kid(k1)
    assert KeyRing.kid_of("ENC:abcd") is None and KeyRing.kid_of("plain") is None


def test_json_round_trip(k1: bytes) -> None:
    ring = KeyRing([k1])
    obj = {"user": "u", "token": "t€", "n": [1, 2]}
    assert ring.decrypt_json(ring.encrypt_json(obj)) == obj
    assert ring.decrypt_json('{"legacy": true}') == {"legacy": True}
    with pytest.raises(DecryptError):
        ring.decrypt_json(ring.encrypt("not json"))


def test_plaintext_legacy_passes_through(k1: bytes) -> None:
    assert KeyRing([k1]).decrypt("hunter2") == "hunter2"


def test_legacy_enc_format_tries_every_key(k1: bytes, k2: bytes) -> None:
    nonce = os.urandom(12)
    legacy = "ENC:" + b64(nonce + AESGCM(k2).encrypt(nonce, b"old secret", None))
    assert KeyRing([k1, k2]).decrypt(legacy) == "old secret"
    with pytest.raises(SecretUnavailable) as info:
        KeyRing([k1]).decrypt(legacy)
    assert info.value.kid is None


def test_unknown_kid_is_secret_unavailable(k1: bytes, k2: bytes) -> None:
    value = KeyRing([k2]).encrypt("s")
    with pytest.raises(SecretUnavailable) as info:
        KeyRing([k1]).decrypt(value)
    assert info.value.kid == kid(k2)
    assert info.value.code == "secret_unavailable"
    assert isinstance(info.value, KeyRingError)


def test_tampered_values_fail(k1: bytes) -> None:
    ring = KeyRing([k1])
    value = ring.encrypt("secret")
    head, body = value.rsplit(":", 1)
    blob = bytearray(base64.b64decode(body))
    blob[-1] ^= 1
    with pytest.raises(DecryptError) as info:
        ring.decrypt(f"{head}:{b64(bytes(blob))}")
    assert not isinstance(info.value, SecretUnavailable)
    for bad in (f"{head}:!!!", f"{head}:{b64(b'short')}", "ENC:v1:XYZ:abcd", "ENC:v1:"):
        with pytest.raises(DecryptError):
            ring.decrypt(bad)


def test_derived_rings(k1: bytes, k2: bytes) -> None:
    ring = KeyRing([k1])
    old = ring.encrypt("a")
    rotated = ring.with_new_primary(k2)
    assert rotated.kids == [kid(k2), kid(k1)] and rotated.primary_kid == kid(k2)
    assert rotated.decrypt(old) == "a"
    assert KeyRing.kid_of(rotated.encrypt("b")) == kid(k2)
    staged = ring.with_secondary(k2)
    assert staged.primary_kid == kid(k1) and kid(k2) in staged
    assert staged.promoted(kid(k2)).kids == [kid(k2), kid(k1)]
    pruned = rotated.without([kid(k1), "deadbeef"])
    assert pruned.kids == [kid(k2)]
    with pytest.raises(KeyRingError):
        rotated.without([kid(k2)])
    assert KeyRing([k1, k2, k1]).kids == [kid(k1), kid(k2)]
    assert ring.kids == [kid(k1)]  # the original is untouched


def test_env_wins_over_file(tmp_path: Path, k1: bytes, k2: bytes) -> None:
    write_key_file(tmp_path / "encryption.key", [k1])
    ring = load(tmp_path, {"MAIL_PROXY_ENCRYPTION_KEY": f" {b64(k2)} , {b64(k1)},"})
    assert ring.source == "env" and ring.kids == [kid(k2), kid(k1)]
    assert load(tmp_path, {"MAIL_PROXY_ENCRYPTION_KEY": "  "}).source == "file"


def test_env_bad_item_named(k1: bytes) -> None:
    with pytest.raises(KeyRingError, match=r"MAIL_PROXY_ENCRYPTION_KEY item 2: .*16 bytes"):
        load(None, {"MAIL_PROXY_ENCRYPTION_KEY": f"{b64(k1)},{b64(bytes(16))}"})


def test_file_format_and_errors(tmp_path: Path, k1: bytes, k2: bytes) -> None:
    path = tmp_path / "encryption.key"
    path.write_text(f"# comment\n\n{b64(k1)}\n   \n# another\n{b64(k2)}\n")
    ring = load(tmp_path)
    assert ring.source == "file" and ring.path == path and ring.kids == [kid(k1), kid(k2)]
    path.write_text(f"{b64(k1)}\n# c\nnot base64 at all!\n")
    with pytest.raises(KeyRingError, match=r"encryption\.key line 3: not valid base64") as info:
        load(tmp_path)
    assert b64(k1) not in str(info.value)  # never echo key material
    path.write_text(f"{b64(k1)}\n{b64(bytes(31))}\n")
    with pytest.raises(KeyRingError, match=r"line 2: key decodes to 31 bytes"):
        load(tmp_path)
    path.write_text("# only comments\n\n")
    with pytest.raises(KeyRingError, match="contains no key"):
        load(tmp_path)


def test_url_safe_unpadded_key_accepted(tmp_path: Path) -> None:
    key = bytes([0xFB]) * 32  # encodes with '+' and '/' in standard base64
    (tmp_path / "encryption.key").write_text(base64.urlsafe_b64encode(key).decode().rstrip("="))
    assert load(tmp_path).kids == [kid(key)]


def test_secrets_file_raw_and_text(tmp_path: Path, k1: bytes, k2: bytes) -> None:
    secret = tmp_path / "run_secret"
    secret.write_bytes(k1)
    ring = load(tmp_path / "missing-folder", secrets_path=secret)
    assert ring.source == "secrets" and ring.kids == [kid(k1)]
    secret.write_text(f"{b64(k2)}\n{b64(k1)}\n")
    assert load(None, secrets_path=secret).kids == [kid(k2), kid(k1)]


def test_no_key_anywhere(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="no encryption key found"):
        load(tmp_path)


def test_write_key_file_is_0600_and_atomic(tmp_path: Path, k1: bytes, k2: bytes) -> None:
    path = tmp_path / "encryption.key"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        write_key_file(path, [k1])
        path.chmod(0o644)
        write_key_file(path, [k2, k1])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(tmp_path).kids == [kid(k2), kid(k1)]
    assert [p.name for p in tmp_path.iterdir()] == ["encryption.key"]  # no temp file left
    with pytest.raises(KeyRingError):
        write_key_file(path, [])
    with pytest.raises(KeyRingError):
        write_key_file(path, [k1, b"short"])
    assert load(tmp_path).kids == [kid(k2), kid(k1)]  # failed writes left the ring alone


def test_ring_file_open_to_others_is_warned(tmp_path: Path, k1: bytes,
                                            caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "encryption.key"
    write_key_file(path, [k1])
    load(tmp_path)
    assert "chmod 600" not in caplog.text
    path.chmod(0o644)
    load(tmp_path)
    assert "chmod 600" in caplog.text and b64(k1) not in caplog.text
