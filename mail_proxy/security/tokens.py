"""API tokens: generation, hashing, constant-time comparison and masking (spec/api.md §2.1).

Tenant API keys have 256 bits of entropy, so a plain SHA-256 (no salt, no slow KDF) is enough
to store them: nobody can brute-force a random 32-byte key from its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["TOKEN_BYTES", "Secret", "generate_token", "hash_api_key", "mask", "tokens_equal"]

TOKEN_BYTES = 32
# Below this length even four characters are a real share of the secret: show none.
_MIN_LEN_FOR_PREFIX = 16
_PREFIX_CHARS = 4


def generate_token() -> str:
    """32 random bytes, URL-safe base64 without padding: 43 characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_api_key(key: str) -> str:
    """The value stored in ``tenants.api_key_hash``: ``sha256(key).hexdigest()``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison; on bytes because compare_digest refuses non-ASCII str."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def mask(secret: str | None) -> str:
    """A display form that identifies a secret without revealing it: ``q0Zb…(43 chars)``."""
    if secret is None:
        return "(not set)"
    if not secret:
        return "(empty)"
    n = len(secret)
    if n < _MIN_LEN_FOR_PREFIX:
        return f"…({n} chars)"
    return f"{secret[:_PREFIX_CHARS]}…({n} chars)"


class Secret:
    """A string that does not leak through ``repr``, ``str``, f-strings or logging.

    Only :meth:`reveal` gives the value, so every place that really needs it is greppable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    def __str__(self) -> str:
        return mask(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return tokens_equal(self._value, other._value)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the clear value into caches or queues unnoticed.
        raise TypeError("a Secret cannot be pickled; pass secret.reveal() explicitly")
