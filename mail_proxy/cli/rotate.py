"""``mail-proxy NAME rotate-key [--prune] [--yes]`` (data.md §4.4).

Order matters: the new ring is written first (new key first, old keys after), the running
worker is told to reload it, then every secret is re-encrypted in one transaction. A failed
re-encryption rolls back, restores the previous ring (keeping the new key as a secondary,
since the worker may have used it meanwhile) and reloads the worker again, so no process is
ever left holding a ring that misses a key in use. Runs on one key file are serialised by a
lock file beside it.
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
               prune_only: Annotated[bool, typer.Option(
                   "--prune-only", help="Only drop old keys no stored value uses: no new "
                                        "key (the last step on hosts sharing a database).")
                                     ] = False,
               yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
               stage: Annotated[bool, typer.Option(
                   "--stage", help="Add a new key as a secondary (decrypt-only) key and "
                                   "print it once, for the other instances.")] = False,
               stage_key: Annotated[str | None, typer.Option(
                   "--stage-key", metavar="BASE64",
                   help="Add this key (from --stage elsewhere) as a secondary key; "
                        "'-' reads it from stdin, out of the process list.")] = None,
               promote: Annotated[str | None, typer.Option(
                   "--promote", metavar="KID",
                   help="Make this staged key the primary and re-encrypt.")] = None,
               no_reencrypt: Annotated[bool, typer.Option(
                   "--no-reencrypt", help="With --promote: only reorder this ring.")] = False
               ) -> int:
    """Rotate the encryption key ring: new primary key, re-encrypt every secret."""
    from mail_proxy.cli.database import load_config
    from mail_proxy.cli.dataview import can_prompt
    from mail_proxy.filelock import locked
    from mail_proxy.security.crypto import KeyRing, generate_key
    from mail_proxy.store import backend_of

    obj: AppContext = ctx.obj
    if sum((stage, stage_key is not None, promote is not None, prune_only)) > 1:
        raise CliExit(EXIT_USAGE, "use one of --stage, --stage-key, --promote and --prune-only")
    if prune and (stage or stage_key is not None):
        raise CliExit(EXIT_USAGE, "--prune goes with a rotation or --promote, not with staging")
    prune = prune or prune_only
    if no_reencrypt and promote is None:
        raise CliExit(EXIT_USAGE, "--no-reencrypt goes with --promote")
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
    # One rotation at a time per key file: two that read the ring before either wrote it
    # would each write their own, and the loser's "restore" dropped the key the winner had
    # just re-encrypted every secret with.
    with locked(path, on_wait=lambda: err(
            "another rotate-key of this instance is running: waiting for it to finish")):
        old = KeyRing.load(config.folder)  # as a rotation that ran meanwhile left it
        if stage or stage_key is not None:
            if stage_key == "-":
                import sys

                stage_key = sys.stdin.readline()
            return _stage(obj, config.folder, path, old, generate_key() if stage
                          else _decode_key(stage_key or ""), show=stage)
        if prune_only:
            _prune(obj.instance, config.folder, path, old, yes)
            return 0
        if promote is not None:
            if promote not in old.kids:
                raise CliExit(1, f"key {promote} is not in this instance's key ring",
                              "stage it first with --stage or --stage-key")
            new = old.promoted(promote)
            if no_reencrypt:
                _write_and_reload(config.folder, path, new)
                out(f"key {promote} is now the primary key of this instance")
                if prune:
                    _prune(obj.instance, config.folder, path, new, yes)
                return 0
        else:
            if backend_of(config.db_url) == "postgresql" and not _confirm_shared_rotation(yes):
                err("nothing rotated")
                return 1
            new = old.with_new_primary(generate_key())
        count = _reencrypt(obj.instance, config.folder, path, old, new)
        out(f"new primary key {new.primary_kid}; {count} values re-encrypted")
        if promote is not None:
            # the staged flow: the other instances hold the key already (PostgreSQL hunt:
            # told to copy the file, which would also drop their own staged keys)
            err(f"the other instances sharing this database hold key {promote} if it was "
                f"staged on them (rotate-key --stage-key); promote it there with rotate-key "
                f"--promote {promote} --no-reencrypt")
        else:
            err(f"copy {path} to every other instance sharing this database")
        if prune:
            _prune(obj.instance, config.folder, path, new, yes)
        return 0


def _confirm_shared_rotation(yes: bool) -> bool:
    """A PostgreSQL database is usually shared: every other instance on it fails to decrypt
    what this rotation re-encrypts until it has the new ring (verification pass: a plain
    rotation run by mistake stopped two other instances' sends)."""
    from mail_proxy.cli.asking import confirm_destructive
    from mail_proxy.cli.dataview import can_prompt

    return confirm_destructive(
        "Other instances on this PostgreSQL database cannot read the secrets re-encrypted "
        "now until they have the new key ring (on several hosts, --stage, --stage-key and "
        "--promote rotate without that gap). Rotate now?", yes=yes, can_prompt=can_prompt(False))


def _decode_key(text: str) -> bytes:
    import base64
    import binascii

    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise CliExit(EXIT_USAGE, "--stage-key takes one key: 32 bytes in standard base64")
    return key


def _write_and_reload(folder: Path | None, path: Path, ring: Any) -> bool:
    from mail_proxy.instance.paths import os_errors
    from mail_proxy.security.crypto import write_key_file

    with os_errors("write", path):  # a full disk: one line naming the file, not "OSError"
        write_key_file(path, ring.keys())
    reloaded = _reload_worker(folder)
    if reloaded:
        err("the running worker was told to reload the key ring")
    return reloaded


def _stage(obj: AppContext, folder: Path | None, path: Path, old: Any, key: bytes, *,
           show: bool) -> int:
    """Add a decrypt-only key; the operator copies it to every instance, then promotes it."""
    import base64

    from mail_proxy.security.crypto import kid

    new = old.with_secondary(key)
    _write_and_reload(folder, path, new)
    out(f"staged key {kid(key)} as a secondary key (it decrypts; it does not encrypt yet)")
    if show:
        out(base64.b64encode(key).decode("ascii"))
        err("this key is shown once: run `mail-proxy OTHER rotate-key --stage-key <it>` for "
            "every other instance sharing the database, then `rotate-key --promote "
            f"{kid(key)}` on one instance and `rotate-key --promote {kid(key)} --no-reencrypt` "
            "on the others (docs/security.md, Several instances on one database)")
    return 0


def _reencrypt(instance: str | None, folder: Path | None, path: Path, old: Any,
               new: Any) -> int:
    """Write the new ring, re-encrypt every secret in one transaction; on failure restore."""
    from mail_proxy.cli.database import Session, logged, with_core
    from mail_proxy.manager import rotation

    rotation.register()
    _write_and_reload(folder, path, new)

    async def run(s: Session) -> int:
        s.core.keyring = new

        async def action() -> tuple[int, Any]:
            n = await rotation.reencrypt_all(s.core, new)
            return 200, {"ok": True, "kid": new.primary_kid, "reencrypted": n}

        answer = await logged(s, "cli rotate-key", None, {"kid": new.primary_kid}, action)
        return int(answer["reencrypted"])

    try:
        count = with_core(instance, run)
    except BaseException:
        # The worker had the new ring meanwhile and may have stored secrets with the new
        # key: it stays, as a secondary key, so nothing written is ever left unreadable.
        restored = old.keeping(new)
        _write_and_reload(folder, path, restored)
        kept = [k for k in restored.kids if k not in old.kids]
        err("the previous key ring was restored" + (
            f"; the new key {', '.join(kept)} stays as a secondary key, for values written "
            "meanwhile (`rotate-key --prune-only` drops it once nothing uses it)"
            if kept else ""))
        raise
    _reload_worker(folder)
    return count


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
    from mail_proxy.instance.paths import os_errors

    with os_errors("write", path):
        write_key_file(path, ring.without(drop).keys())
    _reload_worker(folder)
    out(f"pruned {len(drop)} key(s): {', '.join(drop)}")
