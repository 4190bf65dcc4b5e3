"""The instance key-ring file: creation, and a light presence/shape check for ``serve``.

The cryptography itself lives in ``mail_proxy.security.crypto``; here we only need to create a
new key (32 random bytes, standard base64) and to refuse early, with the source and line named,
when the worker would not be able to start (data.md §4.2).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from mail_proxy.errors import KeyRingError
from mail_proxy.instance.paths import write_private

KEY_FILE = "encryption.key"
SECRETS_FILE = Path("/run/secrets/encryption_key")


def new_key_line() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def create_key_file(folder: Path) -> None:
    write_private(folder / KEY_FILE, new_key_line() + "\n")


def copy_key_file(source: Path, folder: Path) -> None:
    """Install an existing ring (``start --key-file``), checked line by line first."""
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyRingError(f"cannot read key file {source}: {exc.strerror}") from None
    _check_lines(text.splitlines(), str(source))
    write_private(folder / KEY_FILE, text if text.endswith("\n") else text + "\n")


def _check_lines(lines: list[str], source: str) -> int:
    count = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise KeyRingError(f"malformed encryption key in {source} line {number}: "
                               "each key must be 32 bytes in base64")
        count += 1
    return count


def check_key_ring(folder: Path | None) -> str:
    """Raise KeyRingError when no usable key ring exists; return where it comes from."""
    env = os.environ.get("MAIL_PROXY_ENCRYPTION_KEY")
    if env is not None:
        if not _check_lines(env.split(","), "MAIL_PROXY_ENCRYPTION_KEY"):
            raise KeyRingError("MAIL_PROXY_ENCRYPTION_KEY is set but holds no key")
        return "MAIL_PROXY_ENCRYPTION_KEY"
    if folder is not None and (folder / KEY_FILE).is_file():
        path = folder / KEY_FILE
        if not _check_lines(path.read_text(encoding="utf-8").splitlines(), str(path)):
            raise KeyRingError(f"{path} holds no key")
        return str(path)
    if SECRETS_FILE.is_file():
        data = SECRETS_FILE.read_bytes()
        if len(data) == 32:
            return str(SECRETS_FILE)
        if _check_lines(data.decode("utf-8", "replace").splitlines(), str(SECRETS_FILE)):
            return str(SECRETS_FILE)
    raise KeyRingError("no encryption key: set MAIL_PROXY_ENCRYPTION_KEY or create "
                       "encryption.key in the instance folder")
