"""``mail-proxy NAME rotate-key [--prune] [--yes]`` (data.md §4.4).

Order matters: the new ring is written first (new key first, old keys after), the running
worker is told to reload it, then every secret is re-encrypted in one transaction. A failed
re-encryption rolls back, restores the previous ring file and reloads the worker again, so
no process is ever left holding a ring that misses a key in use.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from mail_proxy.cli.application import EXIT_USAGE, AppContext, CliExit, err, out


def _reload_worker(folder: Path | None) -> bool:
    from mail_proxy.instance.states import read_record, supervisor_alive

    if folder is None:
        return False
    record = read_record(folder)
    if not supervisor_alive(record):
        return False
    assert record is not None
    os.kill(int(record["supervisor_pid"]), signal.SIGHUP)
    return True


def rotate_key(ctx: typer.Context,
               prune: Annotated[bool, typer.Option(
                   "--prune", help="Then drop every old key no stored value uses.")] = False,
               yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False
               ) -> int:
    """Rotate the encryption key ring (data.md §4.4)."""
    from mail_proxy.cli.database import Session, load_config, logged, with_core
    from mail_proxy.cli.dataview import can_prompt
    from mail_proxy.manager import rotation
    from mail_proxy.security.crypto import KeyRing, generate_key, write_key_file

    obj: AppContext = ctx.obj
    if prune and not yes and not can_prompt(False):  # refuse before anything is rotated
        raise CliExit(EXIT_USAGE, "confirmation needed (no terminal to ask; pass --yes)")
    config = load_config(obj.instance)
    old = KeyRing.load(config.folder)
    if old.source == "env":
        raise CliExit(EXIT_USAGE, "the key ring comes from MAIL_PROXY_ENCRYPTION_KEY",
                      "rotate it where the variable is defined")
    if old.source != "file" or old.path is None:
        raise CliExit(EXIT_USAGE, f"the key ring comes from {old.path}, which this command "
                                  "does not rewrite", "rotate it where it is defined")
    path = old.path
    new = old.with_new_primary(generate_key())
    rotation.register()
    write_key_file(path, new.keys())
    _reload_worker(config.folder)

    async def run(s: Session) -> int:
        s.core.keyring = new

        async def action() -> tuple[int, Any]:
            n = await rotation.reencrypt_all(s.core, new)
            return 200, {"ok": True, "kid": new.primary_kid, "reencrypted": n}

        answer = await logged(s, "cli rotate-key", None, {"kid": new.primary_kid}, action)
        return int(answer["reencrypted"])

    try:
        count = with_core(obj.instance, run)
    except BaseException:
        write_key_file(path, old.keys())
        _reload_worker(config.folder)
        err("the previous key ring was restored")
        raise
    reloaded = _reload_worker(config.folder)
    out(f"new primary key {new.primary_kid}; {count} values re-encrypted")
    if reloaded:
        err("the running worker was told to reload the key ring")
    err(f"copy {path} to every other instance sharing this database")
    if prune:
        _prune(obj.instance, config.folder, path, new, yes)
    return 0


def _prune(instance: str | None, folder: Path | None, path: Path, ring: Any, yes: bool) -> None:
    from mail_proxy.cli.asking import confirm_destructive
    from mail_proxy.cli.database import Session, with_core
    from mail_proxy.cli.dataview import can_prompt
    from mail_proxy.security.crypto import write_key_file
    from mail_proxy.store.keycheck import used_kids

    async def run(s: Session) -> set[str]:
        return await used_kids(s.core.store)

    used = with_core(instance, run)
    drop = [k for k in ring.kids if k != ring.primary_kid and k not in used]
    if not drop:
        out("no unused key to prune")
        return
    if not confirm_destructive(f"Remove {len(drop)} unused key(s) ({', '.join(drop)})?",
                               yes=yes, can_prompt=can_prompt(False)):
        err("no key removed")
        return
    write_key_file(path, ring.without(drop).keys())
    _reload_worker(folder)
    out(f"pruned {len(drop)} key(s): {', '.join(drop)}")
