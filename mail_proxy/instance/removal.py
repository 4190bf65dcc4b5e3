"""`mail-proxy delete NAME`: remove an instance folder, after stopping what still runs in it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from mail_proxy.errors import ConfigurationError, InstanceError, MailProxyError, OperationFailed
from mail_proxy.instance import paths
from mail_proxy.instance.config import resolve_process_config
from mail_proxy.instance.db_urls import redact_url
from mail_proxy.instance.states import read_record, supervisor_alive, worker_alive
from mail_proxy.instance.stopping import Say, stop


def delete(name: str, *, force: bool, confirm: Callable[[str], bool] | None,
           out: Say, err: Say) -> int:
    folder = paths.instance_dir(name)
    if paths.name_problem(name) or not (folder / "config.toml").is_file():
        raise InstanceError(f"instance '{name}' not found")
    record = read_record(folder)
    if (supervisor_alive(record) or worker_alive(record)) and not force:
        raise OperationFailed(f"instance '{name}' is running",
                              hint=f"stop it first, or use mail-proxy delete {name} --force")
    if not force:
        if confirm is None:
            raise ConfigurationError("deleting an instance needs confirmation "
                                     "(no terminal to ask; pass --force)")
        if not confirm(name):
            raise OperationFailed("deletion cancelled: the name did not match")
    if supervisor_alive(record) or worker_alive(record):  # an orphaned worker too
        stop(name, force=True, out=lambda _line: None, err=err)
    db_url = ""
    try:
        db_url = resolve_process_config(name, need_token=False).db_url
    except MailProxyError:
        pass
    with paths.os_errors("delete", folder):
        shutil.rmtree(folder)
    current, _tenant = paths.read_current()
    if current == name:
        paths.write_current(None, None)
    out(f"deleted instance '{name}'")
    if db_url.startswith(("postgresql://", "postgres://")):
        err(f"note: the PostgreSQL database {redact_url(db_url)} was not dropped")
    elif db_url.startswith("sqlite://") and os.path.exists(db_url[len("sqlite://"):]):
        err(f"note: the SQLite database {db_url[len('sqlite://'):]} lies outside the instance "
            "folder and was not deleted")
    return 0
