"""``rotate-key``, ``config`` and ``command-log`` in-process."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from mail_proxy.instance.config import ProcessConfig
from mail_proxy.security.crypto import KeyRing
from tests.store.pg import pg_url_fixture  # noqa: F401  (the `pg_url` fixture)


def _stored_password(config: ProcessConfig) -> tuple[str, str]:
    """(raw column value, decrypted) of account acme/main, read with the ring on disk."""
    from mail_proxy.manager.accounts import account_secrets
    from mail_proxy.manager.core import Core

    async def read() -> tuple[str, str]:
        ring = KeyRing.load(config.folder)
        core = await Core.open(config.db_url, ring)
        try:
            raw = await core.store.fetch_one("account_lock", tenant_id="acme", id="main")
            secrets = await account_secrets(core, "acme", "main")
            assert raw is not None
            return raw["password"], secrets["password"]
        finally:
            await core.close()

    return asyncio.run(read())


def test_rotate_reencrypts_and_prunes(cli: Any, tenant: str, instance: ProcessConfig,
                                      monkeypatch: Any) -> None:
    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--user", "u", "--password", "pw-rotate-me", "--no-test")
    assert instance.folder is not None
    old_kid = KeyRing.load(instance.folder).primary_kid
    before, plain = _stored_password(instance)
    assert plain == "pw-rotate-me" and f":{old_kid}:" in before

    r = cli("main", "rotate-key")
    assert r.code == 0, r.err
    ring = KeyRing.load(instance.folder)
    assert ring.kids[1:] == [old_kid]
    # the account's password and the instance secret (data.md §2.7)
    assert r.out == f"new primary key {ring.primary_kid}; 2 values re-encrypted\n"
    after, plain = _stored_password(instance)
    assert plain == "pw-rotate-me" and f":{ring.primary_kid}:" in after

    r = cli("main", "rotate-key", "--prune")  # no terminal: pruning needs --yes
    assert r.code == 2 and "pass --yes" in r.err
    r = cli("main", "rotate-key", "--prune", "--yes")
    assert r.code == 0 and r.out.splitlines()[-1].startswith("pruned 2 key(s)")
    assert len(KeyRing.load(instance.folder).kids) == 1
    assert _stored_password(instance)[1] == "pw-rotate-me"
    assert "pw-rotate-me" not in r.text

    r = cli("main", "command-log", "list", "--endpoint", "rotate-key", "--json")
    assert [c["response_status"] for c in json.loads(r.out)["commands"]] == [200, 200]

    keys = [base64.b64encode(k).decode() for k in ring.keys()]  # noqa: SIM118 - a method
    monkeypatch.setenv("MAIL_PROXY_ENCRYPTION_KEY", ",".join(keys))
    r = cli("main", "rotate-key")
    assert (r.code, r.err.splitlines()[0]) == (
        2, "error: the key ring comes from MAIL_PROXY_ENCRYPTION_KEY")


def test_rotate_restores_the_ring_when_a_value_cannot_be_decrypted(
        cli: Any, tenant: str, instance: ProcessConfig) -> None:
    from mail_proxy.security.crypto import generate_key

    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--user", "u", "--password", "pw", "--no-test")
    assert instance.folder is not None
    key_file = instance.folder / "encryption.key"
    # a value written with a key this ring does not hold
    foreign = KeyRing([generate_key()]).encrypt("lost")

    async def plant() -> None:
        import aiosqlite

        async with aiosqlite.connect(instance.db_url[len("sqlite://"):]) as db:
            await db.execute("UPDATE accounts SET imap_password = ?", (foreign,))
            await db.commit()

    asyncio.run(plant())
    saved = KeyRing.load(instance.folder).kids
    r = cli("main", "rotate-key")
    assert r.code == 1
    assert "cannot decrypt accounts row 'acme/main' (imap_password)" in r.err
    # The previous primary is the primary again; the rolled-back key stays as a secondary,
    # since a running worker had it (and may have stored secrets with it) meanwhile.
    after = KeyRing.load(instance.folder).kids
    assert after[:len(saved)] == saved and len(after) == len(saved) + 1 and key_file.exists()
    assert f"the new key {after[-1]} stays as a secondary key" in r.err


def test_rotations_of_one_instance_run_one_after_the_other(
        cli: Any, tenant: str, instance: ProcessConfig) -> None:
    """Two rotate-key at once: the second waits for the first and builds on its ring (it
    once restored its own stale copy, dropping the key every secret had just moved to)."""
    import os
    import subprocess
    import sys
    import time

    from mail_proxy.filelock import locked
    from mail_proxy.security.crypto import generate_key
    from mail_proxy.security.keyfile import write_key_file

    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--user", "u", "--password", "pw-both", "--no-test")
    assert instance.folder is not None
    key_file = instance.folder / "encryption.key"
    with locked(key_file):  # as a first rotation still running would hold it
        second = subprocess.Popen([sys.executable, "-m", "mail_proxy", "main", "rotate-key"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=os.environ.copy())
        time.sleep(1.5)
        assert second.poll() is None  # waiting, not rotating on a stale ring
        # what the first rotation writes meanwhile: a key the second must keep
        first = KeyRing.load(instance.folder).with_secondary(generate_key())
        write_key_file(key_file, first.keys())
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "another rotate-key of this instance is running: waiting for it" in err
    ring = KeyRing.load(instance.folder)
    assert ring.kids[1:] == first.kids and out.startswith(f"new primary key {ring.primary_kid}")
    assert _stored_password(instance)[1] == "pw-both"


def test_config_show_set_reset(cli: Any, instance: ProcessConfig) -> None:
    r = cli("main", "config", "set", "retry_delays", "60,300")
    assert (r.code, r.out) == (0, "retry_delays = [60, 300] (running workers apply it "
                                  "within 5 s)\n")
    r = cli("main", "config", "set", "retry_delays", "5")  # a list of one, as "5,10" is two
    assert (r.code, r.out.split(" (")[0]) == (0, "retry_delays = [5]"), r.err
    r = cli("main", "config", "set", "retry_delays", "60,300")
    r = cli("main", "config", "set", "max_retries", "99")
    assert (r.code, r.err) == (2, "error: max_retries: must be between 0 and 50\n")
    r = cli("main", "config", "set", "bounce_imap_password", "-", stdin="imap-secret-9\n")
    assert r.out == "bounce_imap_password = set (running workers apply it within 5 s)\n"
    r = cli("main", "config", "show", "--json")
    doc = json.loads(r.out)
    settings = doc["instance"]["settings"]
    assert settings["retry_delays"] == [60, 300] and settings["has_bounce_imap_password"]
    assert doc["process"]["port"] == {"value": instance.port, "source": "config.toml"}
    r = cli("main", "config", "show")
    line = next(x for x in r.out.splitlines() if x.startswith("retry_delays"))
    assert line.split() == ["retry_delays", "[60,", "300]", "[60,", "300,", "900,", "3600,",
                            "7200]", "database"]
    assert "imap-secret-9" not in r.out
    r = cli("main", "config", "reset", "retry_delays")
    assert r.code == 0
    r = cli("main", "config", "set", "log_level", "loud")
    assert r.code == 2
    r = cli("main", "config", "set", "log_level", "debug")
    assert r.code == 0 and "next start" in r.out
    r = cli("main", "config", "set", "nonsense", "1")
    assert (r.code, r.err.splitlines()[0]) == (2, "error: unknown setting 'nonsense'")
    r = cli("main", "config", "set", "db_url", "sqlite:///tmp/x.db")  # listed by config show
    assert (r.code, r.err.splitlines()[0]) == (
        2, "error: db_url is fixed when an instance is created"), r.err


def test_command_log_export_and_purge(cli: Any, tenant: str, tmp_path: Any) -> None:
    out = tmp_path / "log.json"
    r = cli("main", "command-log", "export", "--tenant", "acme", "-o", str(out))
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and [c["endpoint"] for c in doc["commands"]] == ["POST /tenant"]
    r = cli("main", "command-log", "list", "--since", "bogus")
    assert r.code == 2 and r.err.startswith("error: --since: 'bogus' is not a time")
    r = cli("main", "command-log", "list", "--since", "1h")
    assert "POST /tenant" in r.out
    cli("main", "tenants", "add", "beta", "--no-api-key")
    first = cli("main", "command-log", "list", "--limit", "1")
    assert "--cursor" in first.err
    cursor = first.err.rsplit("--cursor ", 1)[1].strip()
    rest = json.loads(cli("main", "command-log", "list", "--cursor", cursor, "--json").out)
    assert rest["commands"] and rest["commands"][0]["id"] > 1
    r = cli("main", "command-log", "purge", "--before", "0", "--yes")
    assert (r.code, r.out) == (0, "removed 0 rows\n")


def test_staged_rotation_across_two_instances_of_one_database(
        cli: Any, tenant: str, instance: ProcessConfig) -> None:
    """data.md §4.4: stage on one instance, stage the same key on the other, promote once."""
    import shutil

    from mail_proxy.instance.config import create_instance

    cli("main", "acme", "accounts", "add", "main", "--host", "127.0.0.1", "--port", "2525",
        "--tls-mode", "none", "--user", "u", "--password", "pw-staged", "--no-test")
    assert instance.folder is not None
    # a second instance on the same database, holding a copy of the ring
    other = create_instance("other", "127.0.0.1", None, instance.db_url)
    assert other.folder is not None
    shutil.copy(instance.folder / "encryption.key", other.folder / "encryption.key")
    old_kid = KeyRing.load(instance.folder).primary_kid

    staged = cli("main", "rotate-key", "--stage")
    assert staged.code == 0, staged.err
    new_key = staged.out.strip().splitlines()[-1]
    new_kid = KeyRing([base64.b64decode(new_key)]).primary_kid
    ring = KeyRing.load(instance.folder)
    assert ring.primary_kid == old_kid and new_kid in ring.kids  # decrypts, does not encrypt
    assert cli("other", "rotate-key", "--stage-key", "-", stdin=new_key + "\n").code == 0
    assert new_kid in KeyRing.load(other.folder).kids

    promoted = cli("main", "rotate-key", "--promote", new_kid)
    assert promoted.code == 0, promoted.err
    # the others hold the staged key: promote it there, not copy this file over theirs
    assert f"rotate-key --promote {new_kid} --no-reencrypt" in promoted.err
    assert "copy " not in promoted.err
    raw, plain = _stored_password(instance)
    assert plain == "pw-staged" and f":{new_kid}:" in raw
    # the other instance still decrypts everything before promoting locally
    _raw, plain_other = _stored_password(other)
    assert plain_other == "pw-staged"
    assert cli("other", "rotate-key", "--promote", new_kid, "--no-reencrypt").code == 0
    assert KeyRing.load(other.folder).primary_kid == new_kid
    assert "pw-staged" not in staged.text + promoted.text
    bad = cli("main", "rotate-key", "--stage-key", "not-a-key")
    assert bad.code == 2 and "32 bytes" in bad.err
    # the last step, on every host: drop the old key without minting a new one, which the
    # other host would not hold (a prune that rotated first broke the other host's sends)
    pruned = cli("main", "rotate-key", "--prune-only", "--yes")
    assert pruned.code == 0, pruned.err
    assert KeyRing.load(instance.folder).kids == [new_kid]
    raw, plain = _stored_password(instance)
    assert plain == "pw-staged" and f":{new_kid}:" in raw
    _raw, plain_other = _stored_password(other)
    assert plain_other == "pw-staged"
    assert cli("other", "rotate-key", "--promote", new_kid, "--no-reencrypt", "--prune",
               "--yes").code == 0  # --prune with --no-reencrypt was silently ignored
    assert KeyRing.load(other.folder).kids == [new_kid]
    assert cli("main", "rotate-key", "--prune-only", "--stage").code == 2


def test_a_plain_rotation_on_postgresql_asks_first(cli: Any, pg_url: str) -> None:
    """The database is usually shared: other instances cannot read what a rotation
    re-encrypts until they have the new ring (verification pass: run by mistake, it stopped
    two other instances' sends)."""
    from mail_proxy.instance.config import create_instance

    config = create_instance("pgi", "127.0.0.1", None, pg_url)
    assert config.folder is not None
    before = KeyRing.load(config.folder).primary_kid
    r = cli("pgi", "rotate-key")  # no terminal to ask
    assert (r.code, r.err) == (2, "error: confirmation needed (no terminal to ask; pass "
                                  "--yes)\n")
    assert KeyRing.load(config.folder).primary_kid == before
    r = cli("pgi", "rotate-key", "--yes")
    assert r.code == 0, r.err
    assert KeyRing.load(config.folder).primary_kid != before


def test_a_key_file_that_cannot_be_written_is_one_readable_line(
        cli: Any, instance: ProcessConfig, monkeypatch: Any) -> None:
    """Disk-full hunt: rotate-key on a full disk printed only "unexpected OSError"."""
    from mail_proxy.security import crypto

    def full(*_args: Any, **_kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(crypto, "write_key_file", full)
    r = cli("main", "rotate-key", "--stage")
    assert r.code != 0
    assert r.err.splitlines()[0] == (f"error: cannot write {instance.folder}/encryption.key: "
                                     "No space left on device"), r.err
