"""Secrets: the AES-256-GCM key ring for values at rest, and API tokens."""

from .crypto import (
    DecryptError,
    KeyRing,
    KeyRingError,
    SecretUnavailable,
    generate_key,
    is_encrypted,
    kid,
    write_key_file,
)
from .tokens import Secret, generate_token, hash_api_key, mask, tokens_equal

__all__ = [
    "DecryptError",
    "KeyRing",
    "KeyRingError",
    "Secret",
    "SecretUnavailable",
    "generate_key",
    "generate_token",
    "hash_api_key",
    "is_encrypted",
    "kid",
    "mask",
    "tokens_equal",
    "write_key_file",
]
