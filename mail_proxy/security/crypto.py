"""AES-256-GCM key ring for secrets at rest (spec/data.md §4).

Values written: ``ENC:v1:<kid>:<base64(nonce | ciphertext | tag)>``.
Values read: that format, the key-less genro-mail-proxy format ``ENC:<base64>`` (every key is
tried) and, for rows written by systems that stored secrets in clear, any value without the
``ENC:`` prefix, returned unchanged so that the next write or rotation encrypts it.

A ring is immutable: rotation builds a new ring (:meth:`KeyRing.with_new_primary`) so that a
worker decrypting with the old ring is never disturbed half-way.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import KeyRingError
from .keyfile import (
    ENV_VAR,
    KEY_BYTES,
    KEY_FILE_NAME,
    SECRETS_PATH,
    generate_key,
    kid,
    read_keys,
    write_key_file,
)

__all__ = [
    "ENV_VAR",
    "KEY_FILE_NAME",
    "SECRETS_PATH",
    "DecryptError",
    "KeyRing",
    "KeyRingError",
    "SecretUnavailable",
    "generate_key",
    "is_encrypted",
    "kid",
    "write_key_file",
]

NONCE_BYTES = 12
TAG_BYTES = 16
PREFIX = "ENC:"
PREFIX_V1 = "ENC:v1:"
_KID_RE = re.compile(r"[0-9a-f]{8}")


class DecryptError(KeyRingError):
    """A stored value cannot be turned back into its secret (tampered, truncated, malformed).

    The ciphertext is never used in place of the secret; fix or re-enter the value.
    """

    code = "decrypt_error"


class SecretUnavailable(DecryptError):
    """The key that wrote a value is not in this ring: copy it into ``encryption.key``.

    ``kid`` is the missing key id, or ``None`` for a legacy ``ENC:`` value that no key of the
    ring opens (most likely the genro-mail-proxy key was not imported).
    """

    code = "secret_unavailable"

    def __init__(self, kid: str | None) -> None:
        if kid is None:
            text = ("no key of the ring decrypts this legacy ENC: value; add the key that "
                    "wrote it to encryption.key")
        else:
            text = (f"key {kid} is not in the key ring; copy it into encryption.key "
                    "(a running worker reads the file again on restart or SIGHUP)")
        super().__init__(text)
        self.kid = kid


def is_encrypted(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


class KeyRing:
    """Ordered keys; the first (primary) encrypts, every key decrypts."""

    def __init__(self, keys: Iterable[bytes], *, source: str = "file",
                 path: Path | None = None) -> None:
        ordered: dict[str, AESGCM] = {}
        raw: dict[str, bytes] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise KeyRingError(f"a key must be {KEY_BYTES} bytes, got {len(key)}")
            k = kid(key)
            # A key listed twice is harmless; keep its first (highest) position.
            if k not in ordered:
                ordered[k] = AESGCM(key)  # built once: decrypt is on the send path
                raw[k] = key
        if not ordered:
            raise KeyRingError("the key ring is empty",
                               hint="set MAIL_PROXY_ENCRYPTION_KEY or create encryption.key")
        self._ciphers = ordered
        self._raw = raw
        self.source = source
        self.path = path

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: Path | None, *, env: Mapping[str, str] | None = None,
             secrets_path: Path = SECRETS_PATH) -> KeyRing:
        """Environment, then ``folder/encryption.key``, then the container secret.

        Blocking file I/O: call it at start-up or through ``asyncio.to_thread``.
        """
        keys, source, path = read_keys(folder, os.environ if env is None else env,
                                       secrets_path)
        return cls(keys, source=source, path=path)

    # -- inspection and derivation ---------------------------------------------------------

    @property
    def primary_kid(self) -> str:
        return next(iter(self._ciphers))

    @property
    def kids(self) -> list[str]:
        return list(self._ciphers)

    def keys(self) -> list[bytes]:
        """Raw keys in ring order, for :func:`write_key_file`. Never log them."""
        return list(self._raw.values())

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ciphers

    def __repr__(self) -> str:
        return f"KeyRing(source={self.source!r}, kids={self.kids!r})"

    def _derive(self, keys: list[bytes]) -> KeyRing:
        return KeyRing(keys, source=self.source, path=self.path)

    def with_new_primary(self, key: bytes) -> KeyRing:
        """``key`` first, the current keys after it (a key already present moves up)."""
        return self._derive([key, *(k for k in self.keys() if k != key)])

    def with_secondary(self, key: bytes) -> KeyRing:
        """``key`` appended: it decrypts but does not encrypt (staged rotation)."""
        return self._derive([*self.keys(), key])

    def keeping(self, other: KeyRing) -> KeyRing:
        """This ring, plus the keys of ``other`` it lacks appended as secondary keys."""
        mine, theirs = self.keys(), other.keys()  # lists of raw keys, primary first
        return self._derive([*mine, *(k for k in theirs if k not in mine)])

    def promoted(self, key_id: str) -> KeyRing:
        """The key ``key_id`` of this ring moved to the first position."""
        if key_id not in self._raw:
            raise KeyRingError(f"key {key_id} is not in the key ring")
        return self.with_new_primary(self._raw[key_id])

    def without(self, kids: Iterable[str]) -> KeyRing:
        """The ring minus ``kids``; the primary cannot be removed, unknown kids are ignored."""
        drop = set(kids)
        if self.primary_kid in drop:
            raise KeyRingError(f"key {self.primary_kid} is the primary and cannot be removed")
        return self._derive([key for k, key in self._raw.items() if k not in drop])

    @staticmethod
    def kid_of(value: str) -> str | None:
        """The kid written in a ``ENC:v1:`` value; ``None`` for legacy or plaintext values."""
        if not value.startswith(PREFIX_V1):
            return None
        key_id, sep, _ = value[len(PREFIX_V1):].partition(":")
        return key_id if sep and _KID_RE.fullmatch(key_id) else None

    # -- encryption ------------------------------------------------------------------------

    def encrypt(self, plaintext: str) -> str:
        key_id = self.primary_kid
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"{PREFIX_V1}{key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value
        if value.startswith(PREFIX_V1):
            key_id, sep, body = value[len(PREFIX_V1):].partition(":")
            if not sep or not _KID_RE.fullmatch(key_id):
                raise DecryptError("malformed ENC:v1 value: bad key id")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise SecretUnavailable(key_id)
            nonce, sealed = _split(body)
            try:
                return _utf8(cipher.decrypt(nonce, sealed, None))
            except InvalidTag:
                raise DecryptError(f"value written with key {key_id} failed authentication "
                                   "(altered or corrupted)") from None
        nonce, sealed = _split(value[len(PREFIX):])
        for cipher in self._ciphers.values():
            try:
                return _utf8(cipher.decrypt(nonce, sealed, None))
            except InvalidTag:
                continue
        raise SecretUnavailable(None)

    def encrypt_json(self, obj: Any) -> str:
        return self.encrypt(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def decrypt_json(self, value: str) -> Any:
        text = self.decrypt(value)
        try:
            return json.loads(text)
        except ValueError:
            raise DecryptError("decrypted value is not JSON") from None


def _split(body: str) -> tuple[bytes, bytes]:
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("malformed encrypted value: not valid base64") from None
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise DecryptError("malformed encrypted value: too short")
    return blob[:NONCE_BYTES], blob[NONCE_BYTES:]


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptError("decrypted value is not UTF-8 text") from None
