"""Where ring keys come from and go to (spec/data.md §4.2): environment, files, secrets.

Kept apart from :mod:`.crypto` so that the value format never touches the file system.
All functions here block on file I/O: use them at start-up or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from ..errors import KeyRingError

__all__ = [
    "ENV_VAR",
    "KEY_BYTES",
    "KEY_FILE_NAME",
    "SECRETS_PATH",
    "generate_key",
    "kid",
    "read_keys",
    "write_key_file",
]

log = logging.getLogger(__name__)

ENV_VAR = "MAIL_PROXY_ENCRYPTION_KEY"
KEY_FILE_NAME = "encryption.key"
SECRETS_PATH = Path("/run/secrets/encryption_key")
KEY_BYTES = 32
_KEY_HINT = "each key is 32 random bytes in base64 (44 characters)"


def generate_key() -> bytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def kid(key: bytes) -> str:
    """Key id: the first 8 hex digits of SHA-256 of the raw key (never reveals the key)."""
    return hashlib.sha256(key).hexdigest()[:8]


def _b64decode(text: str) -> bytes:
    """Strict base64; URL-safe alphabet and missing padding are accepted for pasted keys."""
    text = text.strip().translate(str.maketrans("-_", "+/"))
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def _decode_key(text: str, where: str) -> bytes:
    # Messages name the place, never the text: it may be a real key with one typo.
    try:
        raw = _b64decode(text)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{where}: not valid base64", hint=_KEY_HINT) from None
    if len(raw) != KEY_BYTES:
        raise KeyRingError(f"{where}: key decodes to {len(raw)} bytes, expected {KEY_BYTES}",
                           hint=_KEY_HINT)
    return raw


def _parse_lines(data: bytes, label: str) -> list[bytes]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyRingError(f"{label}: not a text file of base64 keys") from None
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_decode_key(line, f"{label} line {number}"))
    if not keys:
        raise KeyRingError(f"{label}: contains no key")
    return keys


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyRingError(f"{path}: cannot read the key ring ({exc.strerror})") from None


def _warn_if_open_to_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is accessible to other users (mode %o); run chmod 600 on it",
                    path, stat.S_IMODE(mode))


def read_keys(folder: Path | None, env: Mapping[str, str],
              secrets_path: Path = SECRETS_PATH) -> tuple[list[bytes], str, Path | None]:
    """``(keys, source, path)`` from the first source found; ``KeyRingError`` otherwise."""
    value = env.get(ENV_VAR, "")
    if value.strip():
        keys = [_decode_key(item, f"{ENV_VAR} item {n}")
                for n, item in enumerate(value.split(","), start=1) if item.strip()]
        if not keys:
            raise KeyRingError(f"{ENV_VAR}: contains no key")
        return keys, "env", None
    if folder is not None:
        path = Path(folder) / KEY_FILE_NAME
        if path.exists():
            keys = _parse_lines(_read(path), str(path))
            _warn_if_open_to_others(path)
            return keys, "file", path
    if secrets_path.exists():
        data = _read(secrets_path)
        # A raw 32-byte secret: a text ring is never 32 bytes (one base64 key is 44 chars).
        keys = [data] if len(data) == KEY_BYTES else _parse_lines(data, str(secrets_path))
        return keys, "secrets", secrets_path
    where = f"{Path(folder) / KEY_FILE_NAME}, " if folder is not None else ""
    raise KeyRingError(f"no encryption key found (looked at {ENV_VAR}, {where}{secrets_path})",
                       hint="`mail-proxy start` creates encryption.key for a new instance")


_HEADER = (
    "# mail-proxy encryption key ring. The first key encrypts, every key decrypts.\n"
    "# Keep this file secret (mode 0600) and identical on every instance sharing the database.\n"
)


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace ``path`` atomically with ``keys`` (first = primary), mode 0600 from the start.

    The temporary file is created 0600 before any byte is written, fsynced, then renamed over
    ``path``, so a crash leaves either the old ring or the new one, never half of one.
    """
    if not keys:
        raise KeyRingError("refusing to write an empty key ring")
    lines = [_HEADER]
    for n, key in enumerate(keys):
        if len(key) != KEY_BYTES:
            raise KeyRingError(f"a key must be {KEY_BYTES} bytes, got {len(key)}")
        role = "primary" if n == 0 else "secondary"
        lines.append(f"# kid {kid(key)} ({role})\n{base64.b64encode(key).decode('ascii')}\n")
    data = "".join(lines).encode("ascii")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may only narrow it; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)
