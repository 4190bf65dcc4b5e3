"""An instance's SQLite database: made with the instance, never silently made again.

SQLite creates a missing file on open. Before, a database that had gone (deleted, a volume
not mounted at boot, a wrong path after a move) was replaced by an empty one the next time
the worker or any CLI command opened it: the instance ran on, with every queued message,
tenant and account gone and nothing said. The database is therefore created with the
instance, and afterwards a missing file is an error that names it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any

from mail_proxy.errors import ConfigurationError, InstanceError


class DatabaseMissing(InstanceError):
    code = "database_missing"


def create_database(db_url: str) -> None:
    """Create the SQLite file at ``db_url`` with the current schema (PostgreSQL: nothing:
    its database is the operator's, and a missing one fails to connect anyway)."""
    from mail_proxy.store import backend_of, open_store, sqlite_path

    if backend_of(db_url) != "sqlite":
        return
    # Private whatever the caller's umask; SQLite gives its -wal and -shm files the mode of
    # the database file.
    path = sqlite_path(db_url)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:  # a folder that does not exist, no permission, a full disk
        raise ConfigurationError(f"cannot create the SQLite database {path}: "
                                 f"{exc.strerror or exc}") from None

    async def run() -> None:
        store = open_store(db_url)
        await store.open()
        await store.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside a loop
        pool.submit(asyncio.run, run()).result()


def check_database(config: Any) -> None:
    """Refuse an instance whose SQLite file is gone; configurations without a folder (the
    GMP_* variables) keep creating theirs on first use."""
    from mail_proxy.store import backend_of, sqlite_path

    if config.folder is None or backend_of(config.db_url) != "sqlite":
        return
    path = sqlite_path(config.db_url)
    if not os.path.exists(path):
        problem = "is missing"
    elif _size(path) == 0 and _size(path + "-wal") == 0:
        # truncated (`: > file`, a failed copy): SQLite would read it as a new, empty database
        problem = "is empty (0 bytes)"
    else:
        return
    inside = config.folder is not None and os.path.dirname(os.path.abspath(path)) == \
        os.path.abspath(config.folder)
    from_env = next((v for v in ("GMP_DB_URL", "GMP_DB_PATH") if os.environ.get(v)), None)
    hint = (f"restore it from a backup, or correct {from_env} (it names the file)" if from_env
            else "restore it from a backup; to start afresh with an empty one: mail-proxy "
            f"delete {config.name}, then mail-proxy start {config.name}" if inside else
            "restore it from a backup, or point db_url in config.toml at the right file")
    raise DatabaseMissing(f"the database of instance '{config.name}' {problem}: {path}",
                          hint=hint)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
