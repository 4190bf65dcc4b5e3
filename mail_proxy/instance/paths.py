"""Where instances live on disk, and the file-mode rules that keep their secrets private.

Everything under ``$MAIL_PROXY_HOME`` is created owner-only: folders 0700, files 0600. Secret
files get their mode at ``open`` time (never ``chmod`` after writing) so there is no window in
which another user could read them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from mail_proxy.errors import ConfigurationError, InstanceError

GLOBAL_WORDS = ("list", "start", "stop", "restart", "status", "delete", "logs", "serve", "use",
                "current", "completion")
INSTANCE_WORDS = ("info", "stats", "token", "run-now", "config", "command-log", "rotate-key",
                  "tenants")
TENANT_WORDS = ("info", "run-now", "suspend", "activate", "send", "accounts", "messages",
                "suppressions")
TENANT_ONLY_WORDS = ("suspend", "activate", "send", "accounts", "messages", "suppressions")
RESERVED_WORDS = frozenset(GLOBAL_WORDS + INSTANCE_WORDS + TENANT_WORDS)

# fullmatch: with re.match, "$" also matches before a final newline ("nl\n" passed)
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
CURRENT_FILE = ".current"


def home() -> Path:
    """The root of instance folders (not created here), always absolute.

    A relative MAIL_PROXY_HOME is taken from the current directory: the database URL stored
    in config.toml must be absolute, and the supervisor runs in the instance folder.
    """
    raw = os.environ.get("MAIL_PROXY_HOME")
    root = Path(raw).expanduser() if raw else Path.home() / ".mail-proxy"
    return Path(os.path.abspath(root))


def ensure_home() -> Path:
    root = home()
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        # bytes that are not UTF-8 reach Python as lone surrogates, which config.toml cannot
        # hold: the instance would be created with a configuration nothing can read back
        raise ConfigurationError(f"MAIL_PROXY_HOME is not UTF-8 text: "
                                 f"{str(root).encode('utf-8', 'backslashreplace').decode()}"
                                 ) from None
    make_private_dir(root)
    return root


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an instance name, or None when it can."""
    if not _NAME_RE.fullmatch(name):
        shown = name if name.isprintable() else repr(name)[1:-1]  # "nl\n", not a line break
        return (f"invalid instance name '{shown}': use 1-63 characters a-z, 0-9, '_' or '-', "
                "starting with a letter or digit")
    if name in RESERVED_WORDS:
        return f"invalid instance name '{name}': it is a mail-proxy command word"
    return None


def validate_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ConfigurationError(problem)
    return name


def instance_dir(name: str) -> Path:
    return home() / name


def instance_names() -> list[str]:
    """Existing instances: sub-folders with a valid name and a config.toml."""
    root = home()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []  # no instance created yet
    except OSError as exc:
        # a file, or a folder we may not read: "no instances yet" would be a lie
        raise ConfigurationError(f"cannot read {root}: {exc.strerror}",
                                 hint="MAIL_PROXY_HOME must be a folder you own") from None
    return sorted(e.name for e in entries
                  if e.is_dir() and name_problem(e.name) is None
                  and os.path.exists(os.path.join(e.path, "config.toml")))


def existing_instance(name: str) -> Path:
    """The folder of an existing instance, checked for privacy; InstanceError when missing."""
    folder = instance_dir(name)
    if name_problem(name) is not None or not (folder / "config.toml").is_file():
        raise InstanceError(f"instance '{name}' not found")
    check_private(folder)
    return folder


@contextlib.contextmanager
def os_errors(action: str, path: Path) -> Iterator[None]:
    """Turn an OSError into one line naming ``path`` and the reason (cli.md §8, exit 2):
    a file where a folder belongs, a read-only or full disk, missing permissions."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot {action} {path}: {reason}") from None


def _not_a_folder(path: Path) -> ConfigurationError:
    if path.is_symlink():
        what = "which is not a folder" if path.exists() else "which does not exist"
        reason = f"it is a symbolic link to {os.readlink(path)}, {what}"
    else:
        reason = "a file with that name is in the way"
    return ConfigurationError(f"cannot create {path}: {reason}")


def make_private_dir(path: Path) -> None:
    """Create ``path`` owner-only; an existing folder is left alone (check_private judges it)."""
    if not path.parent.is_dir():
        make_parents(path.parent)
    with os_errors("create", path):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir():
                raise _not_a_folder(path) from None


def make_parents(path: Path) -> None:
    """``mkdir -p`` for the folders above the home, with the same one-line errors."""
    for parent in reversed([path, *path.parents]):
        if parent.is_dir():
            continue
        if os.path.lexists(parent):
            raise _not_a_folder(parent)
        with os_errors("create", parent), contextlib.suppress(FileExistsError):
            parent.mkdir()


def check_private(folder: Path) -> None:
    """Refuse a folder that group or others can read: it holds the admin token and keys."""
    with os_errors("use", folder):
        mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"{folder} is accessible by other users (mode {mode:04o})",
            hint=f"chmod 700 {folder}")


def write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` with mode 0600 set before any byte is written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os_errors("write", path):
        try:
            _write_new(tmp, text)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a half-written temporary file is no use to anyone
            raise


def _write_new(tmp: Path, text: str) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits, never added: stay exact
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if fd >= 0:
            os.close(fd)


def read_current() -> tuple[str | None, str | None]:
    """The (instance, tenant) stored by ``use``; missing parts are None."""
    try:
        text = (home() / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # unreadable is no context: `use` rewrites it
        return None, None
    if not text:
        return None, None
    inst, _, tenant = text.partition("/")
    return inst or None, tenant or None


def write_current(instance: str | None, tenant: str | None) -> None:
    if not instance and not tenant:
        path = home() / CURRENT_FILE
        if os.path.lexists(path):  # nothing to clear is not an error, even on a read-only disk
            with os_errors("remove", path):
                path.unlink()
        return
    root = ensure_home()
    path = root / CURRENT_FILE
    text = (instance or "") + (f"/{tenant}" if tenant else "")
    write_private(path, text + "\n")
