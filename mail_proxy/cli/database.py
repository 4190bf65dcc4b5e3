"""Open an instance's database for one CLI command, and write the command-log row.

The CLI works on the database directly, whether or not the worker runs (SQLite: WAL plus a
busy timeout, so both can write). Each command runs one event loop: :func:`with_core` opens
the :class:`Core`, runs the command's coroutine and always closes the store.

Pending migrations are applied only when the instance's worker is not running (data.md §3):
a newer CLI must never upgrade a database under an older worker.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mail_proxy.cli.application import CliExit
from mail_proxy.errors import FieldError, InstanceError, MailProxyError, ValidationFailed
from mail_proxy.instance.database import check_database

if TYPE_CHECKING:
    from mail_proxy.instance.config import ProcessConfig
    from mail_proxy.manager.core import Core, Principal

T = TypeVar("T")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with arbitrary uids)
        return str(os.getuid())


def actor() -> str:
    return f"cli:{os_user()}"


def principal() -> Principal:
    from mail_proxy.manager.core import Principal

    return Principal("cli", name=actor())


@dataclass
class Session:
    """What a command body gets: the open core, who acts, and the process configuration."""

    core: Core
    config: ProcessConfig
    principal: Principal


def worker_running(config: ProcessConfig) -> bool:
    from mail_proxy.instance.states import read_record, supervisor_alive, worker_alive

    if config.folder is None:
        return False
    record = read_record(config.folder)
    return supervisor_alive(record) or worker_alive(record)


def _sqlite_version(path: str) -> int | None:
    """Applied schema version of an existing SQLite file; None when there is no file."""
    if not os.path.exists(path):
        return None
    try:
        from mail_proxy.instance.lookup import sqlite_uri

        conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)
    except sqlite3.Error as exc:
        # only a database without the table is at version 0; an I/O error or a damaged
        # file is left to the store's open, which says what it is (disk-full hunt: a
        # deleted WAL read as "needs migration 0 -> 1, but its worker is running")
        return 0 if "no such table" in str(exc) else None
    finally:
        conn.close()


def check_migrations(config: ProcessConfig) -> None:
    """Refuse to migrate a database under a running worker (data.md §3)."""
    from mail_proxy.store import backend_of, sqlite_path
    from mail_proxy.store.queries import migrations

    if backend_of(config.db_url) != "sqlite":
        return  # PostgreSQL: see docs/decisions/cli_data.md
    applied = _sqlite_version(sqlite_path(config.db_url))
    known = migrations("sqlite")
    latest = known[-1][0] if known else 0
    if applied is None or applied >= latest:
        return  # a newer schema is refused by the store itself with a clear message
    if worker_running(config):
        raise CliExit(1, f"the database of instance '{config.name}' needs migration "
                         f"{applied} -> {latest}, but its worker (an older mail-proxy) is "
                         "running", f"restart it with this version: mail-proxy restart "
                                    f"{config.name}")


def load_config(instance: str | None) -> ProcessConfig:
    from mail_proxy.instance.config import resolve_process_config

    if instance is None:
        raise InstanceError("no instance given and no context set")
    return resolve_process_config(instance, need_token=False)


async def open_session(config: ProcessConfig) -> Session:
    from mail_proxy.manager.core import Core
    from mail_proxy.security.crypto import KeyRing

    keyring = await asyncio.to_thread(KeyRing.load, config.folder)
    core = await Core.open(config.db_url, keyring, name=config.name,
                           pool_size=2, password=config.db_password)
    return Session(core=core, config=config, principal=principal())


def with_core(instance: str | None, body: Callable[[Session], Awaitable[T]], *,
              invalid_exit: int = 1) -> T:
    """Open the instance's database, run ``body``, close; field errors become one line
    (exit ``invalid_exit``: 1 for refused data, 2 where the spec calls it a usage error)."""
    config = load_config(instance)
    check_database(config)
    check_migrations(config)

    async def main() -> T:
        session = await open_session(config)
        try:
            return await body(session)
        finally:
            await session.core.close()

    try:
        return asyncio.run(main())
    except ValidationFailed as exc:
        raise CliExit(invalid_exit, field_sentence(exc.fields)) from None


FLAG_NAMES: dict[str, str] = {}


def field_sentence(fields: list[FieldError]) -> str:
    """``--host: is required; --port: must be …`` (flag names when the field has one)."""
    parts = [f"{FLAG_NAMES.get(f.field, f.field)}: {f.message}" for f in fields]
    return "; ".join(parts)


def error_body(exc: MailProxyError) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error": exc.message, "code": exc.code}
    if exc.detail is not None:
        body["detail"] = exc.detail
    return body


async def logged(session: Session, endpoint: str, tenant_id: str | None, payload: Any,
                 action: Callable[[], Awaitable[tuple[int, Any]]]) -> Any:
    """Run a write and append its command-log row (api.md §8), success or failure.

    ``action`` returns (HTTP-equivalent status, answer); the answer is returned. A failed
    write is recorded with the status the REST route would have answered, then re-raised.
    """

    try:
        status, answer = await action()
    except MailProxyError as exc:
        await _record(session, endpoint, tenant_id, payload, exc.status, error_body(exc))
        raise
    await _record(session, endpoint, tenant_id, payload, status, answer)
    return answer


async def _record(session: Session, endpoint: str, tenant_id: str | None, payload: Any,
                  status: int, body: Any) -> None:
    from mail_proxy.manager import command_log

    await command_log.record(session.core, actor=session.principal.actor, endpoint=endpoint,
                             tenant_id=tenant_id, payload=payload, response_status=status,
                             response_body=body)
